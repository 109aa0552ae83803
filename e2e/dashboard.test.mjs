// End-to-end tests of the webhooks dashboard: the real `tidings` binary, a real HTTP receiver and
// Debian's headless Chromium. One Tidings and one browser for the file, a fresh browser context per
// test. The tests run in order and share one workspace: the webhook made in the form by "create a
// webhook" is the one later tests use (they make one through the API when run on their own).
//
// Screenshots of the main screens land in target/e2e-screenshots/.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, screenshot, startReceiver, startTidings } from './harness.mjs';

const TEST_TIMEOUT = 60_000;
const WAIT = 15_000; // how long one expected change on a page may take
const EVENT_TYPE = 'email.sent.v1';

// ---------- shared state and helpers ----------

let browser;
let tidings;
let receiver;
let ws; // the workspace of the main flow
let example; // the catalog example of EVENT_TYPE
let hook = null; // { id, secret } of the webhook the flow works on
const contexts = [];
const pageErrors = [];

const sel = (name) => `[data-test="${name}"]`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls `probe` until it returns a truthy value; throws `message` (and the last value) on timeout. */
async function eventually(probe, message, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out: ${message} (last: ${JSON.stringify(last)})`);
    await sleep(100);
  }
}

/** Waits until the locator's text matches `pattern`; returns the text. */
async function textMatches(locator, pattern, timeout = WAIT) {
  await locator.waitFor({ timeout });
  let text = '';
  await eventually(async () => {
    text = (await locator.textContent()) ?? '';
    return pattern.test(text);
  }, `text ${pattern} in ${locator}, had ${JSON.stringify(text)}`, timeout);
  return text;
}

async function api(method, route, body) {
  const answer = await tidings.api(method, route, body);
  assert.ok(answer.status < 300, `${method} ${route} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer.body;
}

/** A page in a fresh browser context; the context is closed after the test. */
async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (error) => pageErrors.push(error));
  return page;
}

/** Opens the dashboard through a new portal session of `workspace`, then goes to `hash` if given. */
async function openPortal(page, { workspace = ws, hash } = {}) {
  const session = await api('POST', `/v1/workspaces/${workspace}/portal-sessions`, {});
  await page.goto(session.url);
  await page.locator(sel('workspace-name')).waitFor();
  if (hash) await page.evaluate((h) => { window.location.hash = h; }, hash);
  return session;
}

const hookHash = (id = hook.id) => `#/webhooks/${id}`;

/** Opens the page of the flow's webhook and waits for it to finish loading. */
async function openWebhookPage(page) {
  await openPortal(page, { hash: hookHash() });
  await page.locator(sel('webhook-settings')).waitFor();
}

/** Waits until no loading spinner is left in the main area (before screenshots). */
async function settled(page) {
  await page.waitForFunction(() => !document.querySelector('#main .loading'), null, { timeout: WAIT });
}

/** The webhook of the flow; made through the API when the test creating it in the form did not run. */
async function ensureHook() {
  if (!hook) {
    const created = await api('POST', `/v1/workspaces/${ws}/webhooks`, {
      url: receiver.url, name: 'CRM sync', event_types: [EVENT_TYPE],
    });
    hook = { id: created.id, secret: created.secret };
  }
  return hook;
}

async function publish() {
  const event = await api('POST', `/v1/workspaces/${ws}/events`, { type: EVENT_TYPE, data: example });
  assert.equal(event.deliveries.length, 1, 'the event matches exactly the one webhook');
  return { eventId: event.id, deliveryId: event.deliveries[0] };
}

/** At least one delivery of the flow's webhook, so its table has rows. */
async function ensureDelivery() {
  const list = await api('GET', `/v1/workspaces/${ws}/deliveries?webhook_id=${hook.id}&limit=1`);
  if (list.data.length === 0) await publish();
}

async function patchHook(changes) {
  return api('PATCH', `/v1/workspaces/${ws}/webhooks/${hook.id}`, changes);
}

/** Clicks Refresh on the deliveries table until `row` is there. */
async function refreshUntil(page, row) {
  await eventually(async () => {
    await page.locator(sel('refresh-deliveries')).click();
    try {
      await row.first().waitFor({ timeout: 2_000 });
      return true;
    } catch {
      return false;
    }
  }, `deliveries row ${row}`);
}

/** A datetime-local value `ms` milliseconds before now, in the browser's time zone. */
function localInputAgo(page, ms) {
  return page.evaluate((back) => {
    const d = new Date(Date.now() - back);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }, ms);
}

const scrollWidth = (page) => page.evaluate(() => document.documentElement.scrollWidth);
const countOf = async (page, name) => Number(await page.locator(`${sel(name)} .count`).textContent());

// ---------- the tests ----------

describe('webhooks dashboard', { timeout: 170_000 }, () => {
  before(async () => {
    [tidings, receiver, browser] = await Promise.all([startTidings(), startReceiver(), launchBrowser()]);
    ws = (await api('POST', '/v1/workspaces', { name: 'Acme Sales' })).id;
    example = (await api('GET', `/v1/event-types/${EVENT_TYPE}`)).example;
    assert.ok(example, `${EVENT_TYPE} has a catalog example`);
  });

  afterEach(async () => {
    receiver?.answer(200);
    await Promise.all(contexts.splice(0).map((context) => context.close().catch(() => {})));
    const errors = pageErrors.splice(0);
    assert.deepEqual(errors.map(String), [], 'the page threw no uncaught errors');
  });

  after(async () => {
    await Promise.all([
      browser?.close().catch(() => {}),
      tidings?.stop(),
      receiver?.stop(),
    ]);
  });

  test('opens through a portal session and talks to Tidings only', { timeout: TEST_TIMEOUT }, async () => {
    const empty = await api('POST', '/v1/workspaces', { name: 'Northwind Empty Co' });
    const page = await newPage();
    const requests = [];
    page.on('request', (request) => requests.push(request.url()));

    await openPortal(page, { workspace: empty.id });
    assert.equal(await page.locator(sel('workspace-name')).textContent(), 'Northwind Empty Co');
    await page.locator(sel('empty-webhooks')).waitFor();
    await page.locator(sel('add-first-webhook')).waitFor();
    assert.equal(await page.locator(sel('sign-in-form')).count(), 0, 'no sign-in form when opened by a link');
    assert.ok(!page.url().includes('token='), `the token is taken out of the address bar: ${page.url()}`);
    await settled(page);
    await screenshot(page, 'webhooks-empty');

    const elsewhere = requests.filter((url) => !url.startsWith(`${tidings.url}/`));
    assert.ok(requests.length >= 3, `the page loaded its assets and data: ${requests}`);
    assert.deepEqual(elsewhere, [], 'every request goes to the Tidings origin');
  });

  test('creates a webhook in the form; API validation shows next to the field', { timeout: TEST_TIMEOUT }, async () => {
    const types = await api('GET', '/v1/event-types');
    const emailTypes = types.filter((t) => t.group === 'email').map((t) => t.name);
    const otherType = types.find((t) => t.group !== 'email').name;
    assert.ok(emailTypes.length > 1 && emailTypes.includes(EVENT_TYPE), `email group: ${emailTypes}`);

    const page = await newPage();
    await openPortal(page);
    await page.locator(sel('add-first-webhook')).click();
    await page.locator(sel('webhook-form')).waitFor();

    // Select-all ticks every type of its group, and only those.
    for (const name of emailTypes) assert.equal(await page.locator(sel(`type-${name}`)).isChecked(), false);
    await page.locator(sel('group-email')).check();
    for (const name of emailTypes) {
      assert.equal(await page.locator(sel(`type-${name}`)).isChecked(), true, `${name} ticked by select-all`);
    }
    assert.equal(await page.locator(sel(`type-${otherType}`)).isChecked(), false, `${otherType} is in another group`);

    // The API's validation error shows next to the URL field.
    const urlField = page.locator(sel('field-url'));
    await urlField.fill('not a url');
    await page.locator(sel('field-name')).fill('CRM sync');
    await page.locator(sel('save-webhook')).click();
    const urlError = page.locator('[data-error-for="url"]');
    await urlError.waitFor({ state: 'visible' });
    assert.match(await urlError.textContent(), /url/i);
    assert.equal(await urlField.getAttribute('aria-invalid'), 'true');
    assert.ok(!page.url().includes('/wh_'), 'nothing was created');

    await urlField.fill(receiver.url);
    await screenshot(page, 'webhook-form');
    await page.locator(sel('save-webhook')).click();

    // The webhook's page shows the secret once.
    const secret = await textMatches(page.locator(sel('created-secret-value')), /^whsec_\S+$/);
    await page.locator(sel('created-secret')).waitFor();
    const id = await eventually(() => page.evaluate(() => (window.location.hash.match(/^#\/webhooks\/(wh_[^/]+)$/) || [])[1]), 'the webhook page');
    hook = { id, secret };
    const stored = await api('GET', `/v1/workspaces/${ws}/webhooks/${id}`);
    assert.equal(stored.url, receiver.url);
    assert.equal(stored.name, 'CRM sync');
    assert.deepEqual([...stored.event_types].sort(), [...emailTypes].sort());
    assert.equal((await api('GET', `/v1/workspaces/${ws}/webhooks/${id}/secret`)).secret, secret);
    await settled(page);
    await screenshot(page, 'webhook-created');

    // The list shows it, and the secret is not shown again.
    await page.evaluate(() => { window.location.hash = '#/webhooks'; });
    const row = page.locator(`${sel('webhook-row')}[data-id="${id}"]`);
    await textMatches(row, /CRM sync/);
    assert.ok((await row.textContent()).includes(receiver.url));
    assert.equal(await row.locator(sel('webhook-state')).getAttribute('data-state'), 'active');
    await row.click();
    await page.locator(sel('webhook-settings')).waitFor();
    assert.equal(await page.locator(sel('created-secret')).count(), 0, 'the created secret is shown only once');
  });

  test('sends a test and shows status, latency and response', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    const page = await newPage();
    await openWebhookPage(page);
    const before = receiver.received.length;

    await page.locator(sel('test-event-type')).selectOption(EVENT_TYPE);
    await page.locator(sel('send-test')).click();
    const result = page.locator(`${sel('test-result')}[data-status="delivered"]`);
    await result.waitFor();
    assert.equal(await page.locator(sel('test-status-code')).textContent(), 'HTTP 200');
    assert.match(await page.locator(sel('test-latency')).textContent(), /^\d+ ms$/);
    assert.match(await page.locator(sel('test-response')).textContent(), /"ok":\s*true/);

    assert.equal(receiver.received.length, before + 1, 'the receiver got exactly one request');
    const request = receiver.received.at(-1);
    const body = JSON.parse(request.body);
    assert.equal(body.type, EVENT_TYPE);
    assert.deepEqual(body.data, example, 'the catalog example was sent');
    assert.ok(request.headers['webhook-signature'], 'the test is signed');
    await screenshot(page, 'test-result');
  });

  test('an event published through the API appears as delivered', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    const page = await newPage();
    await openWebhookPage(page);
    await page.locator(sel('deliveries-panel')).waitFor();
    const before = receiver.received.length;

    const { eventId, deliveryId } = await publish();
    const row = page.locator(`${sel('delivery-row')}[data-id="${deliveryId}"]`);
    await refreshUntil(page, row);
    await page.locator(`${sel('delivery-row')}[data-id="${deliveryId}"][data-status="delivered"]`).waitFor();
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[0], EVENT_TYPE);
    assert.match(cells[1], /Delivered/);
    assert.equal(cells[2], '200');
    assert.equal(cells[3], '1');

    await eventually(() => receiver.received.length > before, 'the receiver got the event');
    assert.equal(JSON.parse(receiver.received.at(-1).body).id, eventId);
    await settled(page);
    await screenshot(page, 'deliveries');
  });

  test('a failed delivery shows its attempt and is retried from its page', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    await patchHook({ retry_schedule: [600] });
    receiver.answer(500);
    const page = await newPage();
    await openWebhookPage(page);
    const { deliveryId } = await publish();

    // Open the delivery from the table.
    const row = page.locator(`${sel('delivery-row')}[data-id="${deliveryId}"]`);
    await refreshUntil(page, row);
    await row.locator('a').click();
    await page.locator(sel('delivery-status')).waitFor();
    assert.ok(page.url().endsWith(`/deliveries/${deliveryId}`), page.url());
    assert.match(await page.locator(sel('event-data')).textContent(), new RegExp(example.campaign_id));

    // The failed attempt (the page looks again by itself while the delivery is pending).
    const first = page.locator(`${sel('attempt')}[data-number="1"]`);
    await first.waitFor();
    assert.equal(await first.locator(sel('attempt-status-code')).textContent(), 'HTTP 500');
    assert.match(await first.locator(sel('attempt-error')).textContent(), /error status/i);
    assert.match(await first.locator(sel('attempt-response')).textContent(), /"ok":\s*false/);
    assert.equal(await page.locator(sel('delivery-status')).getAttribute('data-status'), 'pending',
      'with a 600 s retry schedule the delivery waits after its first failure');

    // Fix the receiver and retry.
    receiver.answer(200);
    await page.locator(sel('retry-delivery')).click();
    await page.locator(`${sel('delivery-status')}[data-status="delivered"]`).waitFor({ timeout: 20_000 });
    await eventually(async () => (await page.locator(sel('attempt')).count()) === 2, 'two attempts listed');
    assert.equal(await page.locator(`${sel('attempt')}[data-number="2"] ${sel('attempt-status-code')}`).textContent(), 'HTTP 200');
    const stored = await api('GET', `/v1/workspaces/${ws}/deliveries/${deliveryId}`);
    assert.equal(stored.status, 'delivered');
    assert.equal(stored.attempt_count, 2);
    await settled(page);
    await screenshot(page, 'delivery-detail');

    await page.locator(sel('back-to-webhook')).click();
    await page.locator(sel('webhook-settings')).waitFor();
  });

  test('reveals and rotates the signing secret', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    const page = await newPage();
    await openWebhookPage(page);

    await page.locator(sel('reveal-secret')).click();
    const value = page.locator(`${sel('secret-panel')} ${sel('secret-value')}`);
    await textMatches(value, /^whsec_/);
    assert.equal(await value.textContent(), hook.secret, 'the revealed secret is the one given at creation');
    assert.equal(await page.locator(sel('previous-secret')).count(), 0);

    await page.locator(sel('rotate-secret')).click();
    assert.equal(await page.locator(sel('rotate-grace')).inputValue(), '24');
    await page.locator(sel('confirm-rotate')).click();
    const rotated = await textMatches(value, new RegExp(`^whsec_(?!${hook.secret.slice(6).replace(/[^\w]/g, '\\$&')}$)`));
    await page.locator(sel('previous-secret')).waitFor();
    await textMatches(page.locator(sel('banner')), /new signing secret/i);

    const fromApi = await api('GET', `/v1/workspaces/${ws}/webhooks/${hook.id}/secret`);
    assert.equal(rotated, fromApi.secret, 'the page shows the secret the API now signs with');
    assert.ok(fromApi.previous, 'the API keeps the previous secret for the grace period');
    hook.secret = rotated;
    await screenshot(page, 'secret-rotated');
  });

  test('shows summary figures and retriggers failed deliveries', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    // At least one delivered delivery (earlier tests made some; this keeps the test runnable alone).
    const ok = await publish();
    await eventually(async () => (await api('GET', `/v1/workspaces/${ws}/deliveries/${ok.deliveryId}`)).status === 'delivered',
      'the delivery was delivered');
    // One delivery that fails for good: no retries, receiver answering 500.
    await patchHook({ retry_schedule: [] });
    receiver.answer(500);
    const { deliveryId } = await publish();
    await eventually(async () => (await api('GET', `/v1/workspaces/${ws}/deliveries/${deliveryId}`)).status === 'failed',
      'the delivery failed');
    receiver.answer(200);

    const page = await newPage();
    await openWebhookPage(page);
    await page.locator(sel('summary-count-delivered')).waitFor();
    const until = new Date(Date.now() + 60_000);
    const since = new Date(until.getTime() - 25 * 3600_000);
    const summary = await api('GET',
      `/v1/workspaces/${ws}/webhooks/${hook.id}/summary?since=${since.toISOString()}&until=${until.toISOString()}`);
    const delivered = await countOf(page, 'summary-count-delivered');
    const failed = await countOf(page, 'summary-count-failed');
    assert.ok(delivered >= 1, `delivered count ${delivered}`);
    assert.ok(failed >= 1, `failed count ${failed}`);
    assert.equal(delivered, summary.counts.delivered);
    assert.equal(failed, summary.counts.failed);
    assert.ok(Number(await page.locator(sel('summary-total')).textContent()) >= delivered + failed);
    assert.match(await page.locator(sel('summary-success-rate')).textContent(), /^\d+(\.\d)?%$/);
    assert.match(await page.locator(sel('summary-p50')).textContent(), /^\d+ ms$/);

    // Retrigger the failed deliveries of the last hour.
    await page.locator(sel('retrigger-since')).fill(await localInputAgo(page, 3600_000));
    await page.locator(sel('retrigger-status')).selectOption('failed');
    await page.locator(sel('retrigger')).click();
    const result = page.locator(sel('retrigger-result'));
    await result.waitFor();
    assert.equal(await result.getAttribute('data-count'), '1', 'the one failed delivery was queued again');
    assert.match(await result.textContent(), /1 delivery was queued again/);
    await eventually(async () => (await api('GET', `/v1/workspaces/${ws}/deliveries/${deliveryId}`)).status === 'delivered',
      'the retriggered delivery is delivered');
    await patchHook({ retry_schedule: null });
  });

  test('signs in with a pasted workspace key; wrong keys and expired links are refused', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    const key = (await api('POST', '/v1/keys', { scope: 'workspace', workspace_id: ws })).key;
    const page = await newPage();
    await page.goto(`${tidings.url}/`);
    const form = page.locator(sel('sign-in-form'));
    await form.waitFor();
    assert.equal(await page.locator(sel('workspace-name')).isVisible(), false);

    await page.locator(sel('api-key-input')).fill('tdk_not_a_real_key');
    await page.locator(sel('sign-in')).click();
    await textMatches(form.locator('[role="alert"]'), /not accepted/i);
    assert.equal(await page.locator(sel('workspace-name')).isVisible(), false);

    await page.locator(sel('api-key-input')).fill(key);
    await page.locator(sel('sign-in')).click();
    await textMatches(page.locator(sel('workspace-name')), /^Acme Sales$/);
    await page.locator(sel('webhook-list')).waitFor();
    assert.equal(await form.count(), 0);

    await page.locator(sel('sign-out')).click();
    await form.waitFor();
    assert.equal(await page.locator(sel('workspace-name')).isVisible(), false);

    // An expired portal link lands on the sign-in form.
    const session = await api('POST', `/v1/workspaces/${ws}/portal-sessions`, { ttl_s: 1 });
    await sleep(1_500);
    const late = await newPage();
    await late.goto(session.url);
    await late.locator(sel('sign-in-form')).waitFor();
    await textMatches(late.locator(`${sel('sign-in-form')} [role="alert"]`), /\S/);
    assert.equal(await late.locator(sel('workspace-name')).isVisible(), false);
    assert.equal(await late.locator(sel('webhook-list')).count(), 0);
  });

  test('a disabled webhook shows why and is enabled again from its page', { timeout: TEST_TIMEOUT }, async () => {
    // Its own webhook and receiver: the endpoint answers 410 Gone, which disables the webhook.
    const gone = await startReceiver();
    try {
      gone.answer(410);
      const created = await api('POST', `/v1/workspaces/${ws}/webhooks`, {
        url: gone.url, name: 'Old CRM', event_types: ['email.opened.v1'],
      });
      const opened = await api('GET', '/v1/event-types/email.opened.v1');
      await api('POST', `/v1/workspaces/${ws}/events`, { type: 'email.opened.v1', data: opened.example });
      await eventually(async () => {
        const now = await api('GET', `/v1/workspaces/${ws}/webhooks/${created.id}`);
        return now.state === 'disabled';
      }, 'the webhook is disabled by the 410');

      const page = await newPage();
      await openPortal(page, { hash: hookHash(created.id) });
      await textMatches(page.locator(sel('disabled-reason')), /gone/i);
      await screenshot(page, 'webhook-disabled');
      await page.locator(sel('enable-webhook')).click();
      await eventually(async () => {
        const now = await api('GET', `/v1/workspaces/${ws}/webhooks/${created.id}`);
        return now.state === 'active' && now.disabled_reason === null;
      }, 'the webhook is active again');
      await eventually(async () => (await page.locator(sel('disabled-reason')).count()) === 0, 'the reason is gone from the page');
    } finally {
      await gone.stop();
    }
  });

  test('fits a 390 px wide screen and works with the keyboard', { timeout: TEST_TIMEOUT }, async () => {
    await ensureHook();
    await ensureDelivery();
    const page = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await openPortal(page);
    const row = page.locator(`${sel('webhook-row')}[data-id="${hook.id}"]`);
    await row.waitFor();
    await settled(page);
    assert.ok(await scrollWidth(page) <= 390, `list is ${await scrollWidth(page)} px wide`);

    await row.click();
    await page.locator(`${sel('deliveries')} ${sel('delivery-row')}`).first().waitFor();
    await page.locator(sel('summary-count-delivered')).waitFor();
    await settled(page);
    assert.ok(await scrollWidth(page) <= 390, `webhook page is ${await scrollWidth(page)} px wide`);
    await screenshot(page, 'mobile-webhook');

    // Keyboard: Tab from the URL field reaches the next control.
    const desk = await newPage();
    await openPortal(desk, { hash: '#/webhooks/new' });
    const url = desk.locator(sel('field-url'));
    await url.focus();
    assert.equal(await desk.evaluate(() => document.activeElement?.getAttribute('data-test')), 'field-url');
    await desk.keyboard.press('Tab');
    const next = await desk.evaluate(() => ({
      tag: document.activeElement?.tagName, test: document.activeElement?.getAttribute('data-test'),
    }));
    assert.notEqual(next.tag, 'BODY', 'focus did not fall to the body');
    assert.notEqual(next.test, 'field-url', 'focus moved');
    assert.equal(next.test, 'field-name', 'the next control after the URL is the name');
  });
});
