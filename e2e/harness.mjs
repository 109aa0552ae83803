// Test harness for the dashboard: the real `tidings` binary on a free loopback port with a fresh
// database, a real HTTP receiver, and Debian's headless Chromium driven by playwright-core.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const binary = process.env.TIDINGS_BIN || path.join(root, 'target', 'debug', 'tidings');
export const screenshots = path.join(root, 'target', 'e2e-screenshots');

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts Tidings; returns { url, key, api(method, path, body), stop() }. */
export async function startTidings() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tidings-e2e-'));
  const database = `sqlite://${path.join(dir, 'tidings.db')}`;
  const key = execFileSync(binary, ['key', 'create', '--operator', '--database-url', database]).toString().trim();
  const port = await freePort();
  const child = spawn(
    binary,
    ['serve', '--listen', `127.0.0.1:${port}`, '--database-url', database, '--allow-private-targets', '--allow-http-targets'],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TIDINGS_LOG: 'warn' } },
  );
  let log = '';
  child.stderr.on('data', (chunk) => { log += chunk; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(`${url}/readyz`);
      if (response.ok) break;
    } catch { /* not listening yet */ }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`tidings did not start: ${log}`);
    }
    await sleep(50);
  }
  async function api(method, route, body) {
    const response = await fetch(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }
  async function stop() {
    child.kill('SIGTERM');
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
    rmSync(dir, { recursive: true, force: true });
  }
  return { url, key, api, stop, log: () => log };
}

/** A receiver on 127.0.0.1 that records requests and answers with `status` (changeable). */
export async function startReceiver() {
  const received = [];
  const state = { status: 200 };
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      received.push({ headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
      response.writeHead(state.status, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ ok: state.status < 300 }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    answer(status) { state.status = status; },
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Headless Debian Chromium, with no traffic to anything but loopback. */
export async function launchBrowser() {
  mkdirSync(screenshots, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

export async function screenshot(page, name) {
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}
