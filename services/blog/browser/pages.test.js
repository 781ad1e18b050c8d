// The blog's pages in a real browser: Debian's Chromium driven by playwright-core, under `node --test`.
//
// services/blog/tests/test_browser.py starts a blog with seeded data and runs this file with
//   BLOG_URL   where the blog answers (e.g. http://127.0.0.1:41234)
//   BLOG_SEED  JSON: what it seeded (see seed() there), so every assertion names the data it expects
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), HOME_SCREENSHOT (a path: the home page is
// saved there, e.g. docs/screenshots/home.png). A failing test leaves a full-page screenshot in
// test-output/ beside this file. Nothing here sleeps: every wait is on a condition, with a bound.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const OUTPUT = join(HERE, 'test-output');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Chromium as a quiet, offline, throwaway browser: no GPU, no sandbox (root in CI), no calls home.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];
const TEST_TIMEOUT_MS = 60_000;
const WAIT_MS = 10_000;
const MOBILE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through services/blog/tests/test_browser.py`);
  return value;
}

const BASE = required('BLOG_URL').replace(/\/$/, '');
const SEED = JSON.parse(required('BLOG_SEED'));

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (error) {
  throw new Error(`playwright-core is not installed: run \`npm ci\` in ${HERE} (${error.message})`);
}

let browser;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `no Chromium at ${CHROMIUM}: apt-get install chromium (deploy/local/ensure-services installs it)`,
    );
  }
  // launch() gives the browser a new, empty user-data-dir of its own and removes it on close().
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
});

after(async () => {
  await browser?.close();
});

// What a page did that no page of ours should: run script, throw, open a dialog, break the CSP,
// or fail to load one of its own sub-resources (the stylesheet).
function watch(page) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('dialog', (dialog) => {
    problems.push(`dialog opened: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('response', (response) => {
    const request = response.request();
    if (request.resourceType() !== 'document' && response.status() >= 400) {
      problems.push(`${request.resourceType()} ${response.url()} answered ${response.status()}`);
    }
  });
  page.on('requestfailed', (request) => {
    problems.push(`request ${request.url()} failed: ${request.failure()?.errorText}`);
  });
  return problems;
}

async function screenshot(page, name) {
  mkdirSync(OUTPUT, { recursive: true });
  const path = join(OUTPUT, `${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`);
  await page.screenshot({ path, fullPage: true, timeout: WAIT_MS });
  return path;
}

// One test: a fresh browser context and page; on failure, a screenshot of where the page was.
function browserTest(name, contextOptions, body) {
  test(name, { timeout: TEST_TIMEOUT_MS }, async () => {
    const context = await browser.newContext(contextOptions);
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
    const page = await context.newPage();
    const problems = watch(page);
    try {
      await body(page);
      assert.deepEqual(problems, [], 'the page ran no script, raised nothing and loaded all it asked for');
    } catch (error) {
      const shot = await screenshot(page, name).catch((e) => `none (${e.message})`);
      error.message += `\n  at ${page.url()}; screenshot: ${shot}`;
      throw error;
    } finally {
      await context.close();
    }
  });
}

async function open(page, path, status = 200) {
  const response = await page.goto(BASE + path);
  assert.ok(response, `${path}: no response`);
  assert.equal(response.status(), status, `${path}: status`);
  assert.match(response.headers()['content-type'] ?? '', /^text\/html/, `${path}: an HTML page`);
  return response;
}

async function assertOneH1(page, text) {
  const h1 = page.locator('h1');
  assert.equal(await h1.count(), 1, `exactly one h1 on ${page.url()}`);
  await h1.waitFor({ state: 'visible' });
  if (text !== undefined) assert.equal((await h1.textContent()).trim(), text);
}

async function listedTitles(page) {
  return (await page.locator('article.preview h2').allTextContents()).map((title) => title.trim());
}

// Newest first, as the pages list them.
const newestFirst = (titles) => [...titles].reverse();

async function noHorizontalScroll(page) {
  return page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
}

browserTest('home lists the newest articles and its next-page link works', {}, async (page) => {
  await open(page, '/');
  await assertOneH1(page);
  const all = newestFirst(SEED.titles);
  assert.deepEqual(await listedTitles(page), all.slice(0, SEED.pageSize), 'page 1');
  await page.locator('link[rel="stylesheet"]').first().waitFor({ state: 'attached' });
  assert.ok(
    await page.evaluate(() => document.styleSheets.length > 0 && document.styleSheets[0].cssRules.length > 0),
    'the stylesheet is applied',
  );
  if (process.env.HOME_SCREENSHOT) {
    await page.screenshot({ path: process.env.HOME_SCREENSHOT, fullPage: true, timeout: WAIT_MS });
  }

  await page.locator('a[rel="next"]').click();
  await page.waitForURL(`${BASE}/?page=2`);
  await assertOneH1(page);
  assert.deepEqual(await listedTitles(page), all.slice(SEED.pageSize, 2 * SEED.pageSize), 'page 2');
  assert.equal(await page.locator('a[rel="next"]').count(), 0, 'the last page has no next link');

  await page.locator('a[rel="prev"]').click();
  await page.waitForURL(`${BASE}/`);
  assert.deepEqual(await listedTitles(page), all.slice(0, SEED.pageSize), 'back on page 1');
});

browserTest('an article shows its rendered markdown and nothing executable', {}, async (page) => {
  const { slug, title } = SEED.article;
  await open(page, '/');
  await page.locator('article.preview h2 a', { hasText: title }).click();
  await page.waitForURL(`${BASE}/article/${slug}`);
  await page.locator('h1', { hasText: title }).waitFor({ state: 'visible' });

  // Markdown became elements, not text.
  const body = page.locator('main article').first();
  await body.locator('strong', { hasText: SEED.article.bold }).waitFor({ state: 'visible' });
  await body.locator(':is(h2, h3)', { hasText: SEED.article.subheading }).waitFor({ state: 'visible' });
  await body.locator('pre code', { hasText: SEED.article.code }).waitFor({ state: 'visible' });
  assert.ok((await body.locator('li').count()) >= 3, 'the list has its items');
  await body.locator('table td', { hasText: SEED.article.cell }).waitFor({ state: 'visible' });
  assert.equal(await body.getByText('**', { exact: false }).count(), 0, 'no markdown syntax left over');

  // Hostile input is shown as text and never becomes script, handlers or javascript: links.
  await body.getByText(SEED.article.scriptText, { exact: false }).first().waitFor({ state: 'visible' });
  const inert = await page.evaluate(() => ({
    scripts: document.querySelectorAll('script').length,
    frames: document.querySelectorAll('iframe, object, embed, svg').length,
    handlers: [...document.querySelectorAll('*')].flatMap((el) =>
      [...el.attributes].filter((a) => a.name.startsWith('on')).map((a) => `${el.tagName}[${a.name}]`),
    ),
    javascriptLinks: [...document.querySelectorAll('[href], [src]')]
      .map((el) => el.getAttribute('href') ?? el.getAttribute('src'))
      .filter((url) => url.trim().toLowerCase().startsWith('javascript:')),
    pwned: window.pwned,
  }));
  assert.deepEqual(inert, { scripts: 0, frames: 0, handlers: [], javascriptLinks: [], pwned: undefined });

  await page.locator('.comment', { hasText: SEED.comment }).waitFor({ state: 'visible' });
  // The title is the page's one h1, even though the body starts a section with `# ...`.
  await assertOneH1(page, title);
});

browserTest('a tag link leads to the tag page with exactly its articles', {}, async (page) => {
  const { slug } = SEED.article;
  await open(page, `/article/${slug}`);
  await page.locator('main article .tags a', { hasText: SEED.tag }).first().click();
  await page.waitForURL(`${BASE}/tag/${encodeURIComponent(SEED.tag)}`);
  await assertOneH1(page, `#${SEED.tag}`);
  assert.deepEqual(await listedTitles(page), newestFirst(SEED.tagged));
});

browserTest("an author link leads to the profile page with the author's articles", {}, async (page) => {
  const { slug } = SEED.article;
  await open(page, `/article/${slug}`);
  await page.locator('main article .meta a', { hasText: SEED.author.username }).first().click();
  await page.waitForURL(`${BASE}/profile/${SEED.author.username}`);
  await assertOneH1(page, SEED.author.username);
  await page.getByText(SEED.author.bio).waitFor({ state: 'visible' });
  assert.deepEqual(await listedTitles(page), newestFirst(SEED.author.titles));
});

browserTest('the feed and sitemap are linked from the page and answer', {}, async (page) => {
  await open(page, '/');
  const links = {
    feed: await page.locator('link[rel="alternate"][type="application/atom+xml"]').getAttribute('href'),
    feedFooter: await page.locator('footer a[href$="feed.atom"]').getAttribute('href'),
    sitemap: await page.locator('footer a[href$="sitemap.xml"]').getAttribute('href'),
  };
  const fetched = {};
  for (const [name, href] of Object.entries(links)) {
    const response = await page.request.get(new URL(href, page.url()).href);
    assert.equal(response.status(), 200, `${name} (${href})`);
    fetched[name] = { type: response.headers()['content-type'], text: await response.text() };
  }
  assert.match(fetched.feed.type, /^application\/atom\+xml/);
  for (const title of SEED.titles) assert.ok(fetched.feed.text.includes(`<title>${title}</title>`), title);
  assert.match(fetched.sitemap.type, /^application\/xml/);
  const articleUrl = `${BASE}/article/${SEED.article.slug}`;
  assert.ok(fetched.sitemap.text.includes(`<loc>${articleUrl}</loc>`), 'the sitemap lists the article');

  // A URL the sitemap gives answers in the browser too.
  const loc = fetched.sitemap.text.match(/<loc>([^<]*\/article\/[^<]*)<\/loc>/)[1];
  assert.equal((await page.goto(loc)).status(), 200, loc);
});

browserTest('an unknown address is an HTML 404 page that leads home', {}, async (page) => {
  for (const path of [`/article/no-such-${SEED.article.slug}`, '/no/such/page']) {
    await open(page, path, 404);
    await assertOneH1(page);
  }
  await page.locator('main a[href="/"]').first().click();
  await page.waitForURL(`${BASE}/`);
  assert.deepEqual(await listedTitles(page), newestFirst(SEED.titles).slice(0, SEED.pageSize));
});

browserTest('on a 390x844 phone no page scrolls sideways', MOBILE, async (page) => {
  const pages = [
    ['/', 200],
    ['/?page=2', 200],
    [`/article/${SEED.article.slug}`, 200],
    [`/tag/${encodeURIComponent(SEED.tag)}`, 200],
    [`/profile/${SEED.author.username}`, 200],
    ['/no/such/page', 404],
  ];
  const wide = [];
  for (const [path, status] of pages) {
    await open(page, path, status);
    // A phone browser zooms out to show content wider than the screen: innerWidth then grows past
    // the screen's width, so both numbers are checked.
    const { scrollWidth, innerWidth } = await noHorizontalScroll(page);
    if (scrollWidth > innerWidth || innerWidth !== MOBILE.viewport.width) {
      const shot = await screenshot(page, `mobile ${path}`);
      wide.push(`${path}: scrollWidth ${scrollWidth}, innerWidth ${innerWidth} on a ${MOBILE.viewport.width} px screen (${shot})`);
    }
  }
  assert.deepEqual(wide, [], 'pages fit the phone');
});
