// End-to-end test of the API reference page (GET /docs): the real `tidings` binary and Debian's
// headless Chromium. The page must render every operation from files served by Tidings itself,
// and a call made from it with a key must reach the API.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, screenshot, startTidings } from './harness.mjs';

const WAIT = 15_000;

describe('API reference page', { timeout: 120_000 }, () => {
  let browser;
  let tidings;

  before(async () => {
    [tidings, browser] = await Promise.all([startTidings(), launchBrowser()]);
  });

  after(async () => {
    await Promise.all([browser?.close().catch(() => {}), tidings?.stop()]);
  });

  test('renders every operation from Tidings alone and runs a call with a key', { timeout: 60_000 }, async () => {
    const created = await tidings.api('POST', '/v1/workspaces', { name: 'Docs Reader Co' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const context = await browser.newContext();
    const page = await context.newPage();
    const requests = [];
    const errors = [];
    page.on('request', (request) => requests.push(request.url()));
    page.on('pageerror', (error) => errors.push(String(error)));

    await page.goto(`${tidings.url}/docs`);
    const events = page.locator('.opblock-summary-path[data-path="/v1/workspaces/{ws}/events"]');
    await events.first().waitFor({ timeout: WAIT });
    const operations = await page.locator('.opblock').count();
    assert.ok(operations >= 30, `every operation is listed: ${operations}`);

    // Authorize with the operator key, then list workspaces from the page.
    await page.locator('.btn.authorize').first().click();
    await page.locator('.auth-container input').first().fill(tidings.key);
    await page.locator('.auth-btn-wrapper .authorize').first().click();
    await page.locator('.btn-done, .close-modal').first().click();
    const list = page.locator('.opblock-get', {
      has: page.locator('.opblock-summary-path[data-path="/v1/workspaces"]'),
    });
    await list.locator('.opblock-summary').first().click();
    await list.locator('.try-out__btn').click();
    await list.locator('.execute').click();
    const status = list.locator('.live-responses-table tbody .response-col_status').first();
    await status.waitFor({ timeout: WAIT });
    assert.equal((await status.textContent()).trim(), '200');
    const answer = await list.locator('.live-responses-table tbody .response-col_description').first().textContent();
    assert.ok(answer.includes('Docs Reader Co'), `the page shows the API's answer: ${answer}`);
    await screenshot(page, 'api-docs');

    const elsewhere = requests.filter((url) => !url.startsWith(`${tidings.url}/`));
    assert.deepEqual(elsewhere, [], 'every request goes to the Tidings origin');
    assert.deepEqual(errors, [], 'the page threw no uncaught errors');
    await context.close();
  });
});
