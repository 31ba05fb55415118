/*
 * End-to-end test of kiln's web page in Debian's Chromium (playwright-core,
 * headless) against a real `kiln serve`: tests/e2e/run.sh starts the
 * fixtures (loopback registry, base image, wheel index, two kiln serve
 * processes) and runs this file with node. Prints TAP.
 *
 * Environment (set by run.sh):
 *   KILN_URL        kiln serve with a registry (builds run)
 *   KILN_URL_NOREG  kiln serve without a registry (banner, paging)
 *   KILN_TOKEN      the admin token of both
 *   E2E_BASE        the base image reference (pushed to the registry)
 *   E2E_REGISTRY    HOST:PORT of the registry (checks the pushed image)
 *   E2E_OUTPUT      where screenshots go (default tests/e2e/output)
 *   E2E_APT, E2E_PIP, E2E_PIP2, E2E_BLOCKER_PIP   packages used (the blocker's
 *                   index page is held back by run.sh's fault proxy)
 *   CHROMIUM        default /usr/bin/chromium
 */
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const E = process.env;
const URL_A = E.KILN_URL;
const URL_B = E.KILN_URL_NOREG;
const TOKEN = E.KILN_TOKEN;
const BASE = E.E2E_BASE;
const REGISTRY = E.E2E_REGISTRY || '';
const OUT = E.E2E_OUTPUT || join(dirname(fileURLToPath(import.meta.url)), 'output');
const APT = E.E2E_APT || 'jq';
const PIP = E.E2E_PIP || 'kilntest-hello==1.0';
const PIP2 = E.E2E_PIP2 || 'kilntest-extra==1.0';
const BLOCKER_PIP = E.E2E_BLOCKER_PIP || 'kilntest-slow==1.0';
const BUILD_MS = Number(E.E2E_BUILD_TIMEOUT || 180) * 1000;
const SPEC = 'e2e-demo';
const BLOCKER = 'e2e-blocker';

/* ------------------------------------------------------------------ TAP */
let n = 0;
let failed = 0;
let broken = null; /* set when a step others depend on failed */

function diag(text) {
  for (const line of String(text).split('\n')) console.log('#   ' + line);
}
function ok(cond, desc, more) {
  n++;
  console.log((cond ? 'ok ' : 'not ok ') + n + ' - ' + desc);
  if (!cond) {
    failed++;
    if (more) diag(more);
  }
  return cond;
}
/* step(desc, fn, {needed}): one test point; a needed step that fails skips the rest. */
async function step(desc, fn, opts) {
  if (broken) {
    n++;
    console.log('ok ' + n + ' - ' + desc + ' # SKIP ' + broken);
    return false;
  }
  const t0 = Date.now();
  try {
    const r = await fn();
    const good = ok(r !== false, desc, r === false ? 'the check did not hold' : null);
    const sec = (Date.now() - t0) / 1000;
    if (sec >= 10) console.log('# (' + sec.toFixed(1) + ' s)');
    return good;
  } catch (e) {
    ok(false, desc, (e && e.stack) || String(e));
    if (opts && opts.needed) broken = 'needs: ' + desc;
    return false;
  }
}
function check(cond, message) {
  if (!cond) throw new Error(message);
}

/* ------------------------------------------------------------- helpers */
async function api(base, method, path, body) {
  const init = { method, headers: { Authorization: 'Bearer ' + TOKEN } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + '/api/v1' + path, init);
  const text = await res.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* text */ }
  return { status: res.status, data };
}

async function until(what, fn, ms, every) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error('timed out (' + ms / 1000 + ' s) waiting for ' + what);
    await new Promise((r) => setTimeout(r, every || 250));
  }
}

let shot = 0;
async function screenshot(page, name) {
  shot++;
  const file = join(OUT, String(shot).padStart(2, '0') + '-' + name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

const pageErrors = [];
function watch(page, label) {
  page.on('pageerror', (e) => pageErrors.push(label + ': ' + e.message));
  /* a Content-Security-Policy refusal or a script error logged by Chromium */
  page.on('console', (m) => {
    if (m.type() === 'error' && /Refused|Content Security Policy|Uncaught/.test(m.text())) pageErrors.push(label + ': ' + m.text());
  });
  page.setDefaultTimeout(15000);
  return page;
}

async function login(page, base) {
  await page.goto(base + '/');
  await page.fill('#login-token', TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#spec-table');
}

/* Records every status the list shows for a spec (MutationObserver, in page). */
async function recordStatuses(page, name) {
  await page.evaluate((nm) => {
    window.__e2eMarker = 'not reloaded';
    window.__seen = [];
    const rec = () => {
      const el = document.querySelector('tr[data-name="' + nm + '"] .status');
      const s = el ? el.dataset.status : null;
      if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
    };
    new MutationObserver(rec).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    rec();
  }, name);
}

function subsequence(seen, want) {
  let i = 0;
  for (const s of seen) if (s === want[i]) i++;
  return i === want.length;
}

/* ---------------------------------------------------------------- main */
async function main() {
  mkdirSync(OUT, { recursive: true });
  const browser = await chromium.launch({
    executablePath: E.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
    headless: true,
  });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const origin = new URL(URL_A).origin;
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  const J = watch(await ctx.newPage(), 'main page');
  let L = null;
  let K = null;
  let demoJob = null;
  let blockerJob = null;

  try {
    /* ---- login ---- */
    await step('the page asks for the admin token and refuses a wrong one', async () => {
      await J.goto(URL_A + '/');
      await J.waitForSelector('#login-form');
      check(await J.isVisible('label[for=login-token]'), 'the token field has no label');
      await screenshot(J, 'login');
      await J.fill('#login-token', 'not-the-token');
      await J.press('#login-token', 'Enter');
      await J.waitForSelector('#login-error:has-text("not accepted")');
      check(await J.evaluate(() => sessionStorage.length === 0), 'a refused token was kept');
    }, { needed: true });

    await step('logging in with the token shows the Image Builder list; the token is kept for the session', async () => {
      await J.fill('#login-token', TOKEN);
      await J.click('#login-form button[type=submit]');
      await J.waitForSelector('#spec-table');
      check(await J.evaluate((t) => Object.values(sessionStorage).includes(t), TOKEN), 'token not in sessionStorage');
      check(await J.evaluate(() => localStorage.length === 0), 'something went into localStorage');
      await J.reload();
      await J.waitForSelector('#spec-table');
      check(!(await J.isVisible('#banner')), 'registry banner shown although a registry is configured');
    }, { needed: true });
    /* New pages of this context start logged in. */
    await ctx.addInitScript((t) => { if (!sessionStorage.getItem('kiln.adminToken')) sessionStorage.setItem('kiln.adminToken', t); }, TOKEN);

    /* ---- fixtures through the API: a registered base image, a slow "blocker" build ---- */
    await step('setup: the base image is registered for autocomplete, a blocker build occupies the worker', async () => {
      const img = await api(URL_A, 'POST', '/images', { url: BASE });
      check(img.status === 201 || img.status === 409, 'POST /images: ' + img.status + ' ' + JSON.stringify(img.data));
      const r = await api(URL_A, 'POST', '/specs', { name: BLOCKER, baseImage: BASE, packages: { pip: [BLOCKER_PIP] } });
      check(r.status === 201, 'POST /specs blocker: ' + r.status + ' ' + JSON.stringify(r.data));
      blockerJob = await until('the blocker build to run', async () => {
        const s = await api(URL_A, 'GET', '/specs/' + BLOCKER);
        if (s.data && (s.data.status === 'Failed' || s.data.status === 'Cancelled')) throw new Error('blocker ' + s.data.status);
        return s.data && s.data.status === 'Running' ? s.data.jobId : null;
      }, 120000);
    }, { needed: true });

    /* A second tab stays on the list the whole time: it must update by itself. */
    L = watch(await ctx.newPage(), 'list page');
    await L.goto(URL_A + '/#/specs');
    await L.waitForSelector('tr[data-name="' + BLOCKER + '"]');
    await recordStatuses(L, SPEC);

    /* ---- create ---- */
    await step('Create: the form has labelled fields, base image suggestions and package hints', async () => {
      await J.click('#new-spec');
      await J.waitForSelector('#spec-form');
      const unlabelled = await J.evaluate(() => Array.from(document.querySelectorAll('#spec-form input, #spec-form select, #spec-form textarea'))
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map((el) => el.id));
      check(unlabelled.length === 0, 'fields without a label: ' + unlabelled.join(', '));
      await J.waitForSelector('#image-suggestions option[value="' + BASE + '"]', { state: 'attached' });
      check((await J.textContent('#f-pip-hint')).includes('PEP 508'), 'no pip syntax hint');
      check((await J.textContent('#f-conda-hint')).includes('match spec'), 'no conda syntax hint');
      await screenshot(J, 'create-empty');
    }, { needed: true });

    await step('Create: an invalid name is flagged while typing and saves nothing', async () => {
      await J.type('#f-name', 'Bad_Name', { delay: 10 });
      await J.waitForSelector('#f-name-err:has-text("lower case")');
      check(await J.getAttribute('#f-name', 'aria-invalid') === 'true', 'name not marked invalid');
      await J.fill('#f-baseImage', BASE);
      await J.click('#save');
      await J.waitForSelector('#form-errors:not([hidden])');
      await screenshot(J, 'create-invalid-name');
      await J.fill('#f-name', '-bad-');
      await J.waitForSelector('#f-name-err:has-text("start and end")');
      const r = await api(URL_A, 'GET', '/specs?limit=1000');
      check(r.data.items.every((s) => s.name === BLOCKER), 'something was saved: ' + JSON.stringify(r.data.items.map((s) => s.name)));
    });

    await step('Create: an injection attempt in the Pip box gets a field error naming the line, nothing saved', async () => {
      await J.fill('#f-name', SPEC);
      await J.waitForSelector('#f-name-err', { state: 'hidden' });
      await J.fill('#f-baseImage', BASE);
      await J.fill('#f-apt', APT);
      await J.fill('#f-pip', PIP + '\ncurl; rm -rf /');
      await J.click('#save');
      await J.waitForSelector('#f-pip-err li');
      const text = await J.textContent('#f-pip-err');
      check(/Line 2/.test(text), 'the error does not name line 2: ' + text);
      check(await J.getAttribute('#f-pip', 'aria-invalid') === 'true', 'the pip box is not marked invalid');
      check(await J.isVisible('.gutter .bad'), 'the bad line is not marked in the gutter');
      check(await J.textContent('.gutter .bad') === '2', 'the wrong line is marked');
      check((await J.textContent('#f-apt-err')).trim() === '', 'an error next to the APT box too');
      const r = await api(URL_A, 'GET', '/specs/' + SPEC);
      check(r.status === 404, 'the spec was saved: ' + r.status);
      await screenshot(J, 'create-injection-error');
      await J.fill('#f-apt', APT + '\n$(reboot)');
      await J.fill('#f-pip', PIP);
      await J.click('#save');
      await J.waitForSelector('#f-apt-err li:has-text("Line 2")');
      check((await J.textContent('#f-pip-err')).trim() === '', 'the old pip error stayed');
      check((await api(URL_A, 'GET', '/specs/' + SPEC)).status === 404, 'the spec was saved');
    });

    await step('Create: Confirm saves the spec, queues its first build and lands on its Jobs tab', async () => {
      await J.fill('#f-apt', APT);
      await J.fill('#f-pip', PIP);
      await J.fill('#f-description', 'made by the e2e test');
      await J.click('#save');
      await J.waitForURL(/#\/specs\/e2e-demo\/jobs$/);
      await J.waitForSelector('#tab-jobs[aria-selected=true]');
      const row = await J.waitForSelector('#job-rows tr[data-id]');
      demoJob = Number(await row.getAttribute('data-id'));
      const rev = await J.textContent('#job-rows tr[data-id] td:nth-child(2)');
      check(rev.startsWith(SPEC + ':'), 'the revision column is not name:hash: ' + rev);
      const s = await api(URL_A, 'GET', '/specs/' + SPEC);
      check(s.status === 200 && s.data.packages.apt.includes(APT) && s.data.packages.pip.includes(PIP), 'saved spec: ' + JSON.stringify(s.data));
      await screenshot(J, 'jobs-first-build');
    }, { needed: true });

    await step('the list shows the new spec Pending (its build waits for the busy worker)', async () => {
      await until('Pending in the list', () => L.evaluate(() => window.__seen.includes('Pending')), 20000);
      await screenshot(L, 'list-pending');
    });

    /* ---- job view: open it while Pending, then free the worker ---- */
    K = watch(await ctx.newPage(), 'job page');
    await K.setViewportSize({ width: 1280, height: 640 });
    await step('Job view of the queued build: waiting, Cancel shown, frozen spec and Dockerfile', async () => {
      await K.goto(URL_A + '/#/jobs/' + demoJob);
      await K.waitForSelector('#job-spec:has-text("' + PIP + '")');
      const df = await K.textContent('#job-dockerfile');
      check(df.includes('FROM ') && df.includes(APT), 'the Dockerfile: ' + df);
      check((await K.textContent('#job-spec')).includes('- ' + APT), 'the frozen spec lacks the apt package');
      check(await K.isVisible('#job-cancel'), 'no Cancel button');
      await K.evaluate(() => {
        window.__counts = [];
        setInterval(() => {
          const log = document.getElementById('job-log');
          const st = document.querySelector('.head-status .status');
          window.__counts.push({
            lines: log ? log.querySelectorAll('.line').length : 0,
            phase: st ? st.dataset.status : null,
            atEnd: log ? log.scrollTop + log.clientHeight >= log.scrollHeight - 10 : false,
            scrollable: log ? log.scrollHeight > log.clientHeight : false,
            paused: !!window.__paused,
          });
        }, 200);
      });
    });

    await step('Cancel of the blocker through its Jobs tab: it becomes Cancelled', async () => {
      await J.goto(URL_A + '/#/specs/' + BLOCKER + '/jobs');
      await J.click('button[aria-label="Cancel job ' + blockerJob + '"]');
      await J.waitForSelector('#job-rows tr[data-id="' + blockerJob + '"][data-phase="Cancelled"]', { timeout: 60000 });
    });

    await step('the job view follows the build live: Running, log lines arriving, auto-scroll', async () => {
      await K.waitForSelector('.head-status .status[data-status="Running"]', { timeout: 60000 });
      await until('log lines while Running', () => K.evaluate(() => document.querySelectorAll('#job-log .line').length > 3), 60000);
      await screenshot(K, 'job-running');
      const ended = () => K.evaluate(() => {
        const st = document.querySelector('.head-status .status');
        return !!st && ['Succeeded', 'Failed', 'Cancelled'].includes(st.dataset.status);
      });
      /* once the log overflows its box: the user scrolls up, new lines must not pull it down */
      const log = await K.$('#job-log');
      await until('the log to overflow its box', async () => (await ended()) ||
        log.evaluate((el) => el.scrollHeight > el.clientHeight + 40), 60000);
      if (!(await ended())) {
        check(await log.evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 10), 'the log is not at its end');
        await K.evaluate(() => { window.__paused = true; });
        await log.hover();
        await K.mouse.wheel(0, -400);
        await until('the scroll up', () => log.evaluate((el) => el.scrollTop + el.clientHeight < el.scrollHeight - 10), 5000);
        const top = await log.evaluate((el) => el.scrollTop);
        const before = await K.evaluate(() => document.querySelectorAll('#job-log .line').length);
        const more = () => K.evaluate((b) => document.querySelectorAll('#job-log .line').length > b, before);
        await until('more lines or the end', async () => (await more()) || (await ended()), 30000).catch(() => null);
        const grew = await more();
        if (grew) {
          check(await log.evaluate((el) => el.scrollTop) === top, 'new lines pulled the log back to its end');
          if (!(await ended())) {
            check(await K.isVisible('#log-follow'), 'no Follow button while paused');
            await screenshot(K, 'job-log-paused');
            /* the build may end right now, which hides the button: only that excuses a missed click */
            const clicked = await K.click('#log-follow', { timeout: 5000 }).then(() => true, async (e) => {
              if (await ended()) return false;
              throw e;
            });
            if (clicked)
              await until('the end again', () => log.evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 10), 5000);
            else
              diag('the build ended before Follow was clicked: resume not checked');
          }
        } else {
          diag('no new log line arrived after scrolling up: pause not observed');
        }
        await K.evaluate(() => { window.__paused = false; });
      } else {
        diag('the build ended before its log overflowed: scroll pause not checked');
      }
      await until('the build to end', ended, BUILD_MS, 500);
      const counts = await K.evaluate(() => window.__counts);
      const running = counts.filter((c) => c.phase === 'Running');
      const distinct = new Set(running.map((c) => c.lines));
      check(distinct.size >= 3, 'log lines did not arrive in steps while Running: ' + JSON.stringify([...distinct]));
      const follow = running.filter((c) => c.scrollable && !c.paused);
      const off = follow.filter((c) => !c.atEnd).length;
      check(off <= 2, 'the log did not stay scrolled to the end (' + off + ' of ' + follow.length + ' samples)');
    }, { needed: true });

    await step('the build Succeeded: image and digest in the job view, no failure box', async () => {
      const phase = await K.getAttribute('.head-status .status', 'data-status');
      if (phase !== 'Succeeded') {
        const j = await api(URL_A, 'GET', '/jobs/' + demoJob);
        throw new Error('phase ' + phase + ': ' + JSON.stringify(j.data && j.data.error));
      }
      await K.waitForSelector('#job-facts .image-url');
      check(await K.isHidden('#job-failure'), 'a failure box is shown');
      check(await K.isHidden('#job-cancel'), 'Cancel still shown');
      check(await K.evaluate(() => {
        const log = document.getElementById('job-log');
        return log.textContent.includes('kilntest') || log.textContent.length > 200;
      }), 'the log is nearly empty');
      await screenshot(K, 'job-succeeded');
    }, { needed: true });

    await step('Download log saves <job name>.log with the log text', async () => {
      const [dl] = await Promise.all([K.waitForEvent('download'), K.click('#job-download')]);
      const j = (await api(URL_A, 'GET', '/jobs/' + demoJob)).data;
      check(dl.suggestedFilename() === j.name + '.log', 'file name ' + dl.suggestedFilename());
      const path = await dl.path();
      const text = readFileSync(path, 'utf8');
      const shown = await K.evaluate(() => Array.from(document.querySelectorAll('#job-log .line')).map((l) => l.textContent).filter(Boolean));
      const got = text.split('\n').filter(Boolean);
      check(shown.length > 0 && got.length >= shown.length && got.includes(shown[shown.length - 1]),
        'downloaded ' + got.length + ' lines, shown ' + shown.length);
    });

    await step('the list went Pending -> Running -> Succeeded without a reload and shows the pushed URL', async () => {
      await L.waitForSelector('tr[data-name="' + SPEC + '"] .status[data-status="Succeeded"]', { timeout: 10000 });
      const seen = await L.evaluate(() => window.__seen);
      check(subsequence(seen, ['Pending', 'Running', 'Succeeded']), 'statuses seen: ' + seen.join(' -> '));
      check(await L.evaluate(() => window.__e2eMarker) === 'not reloaded', 'the list page was reloaded');
      const url = (await L.textContent('tr[data-name="' + SPEC + '"] .image-url')).trim();
      const j = (await api(URL_A, 'GET', '/jobs/' + demoJob)).data;
      check(url === j.image, 'Image column ' + url + ', job image ' + j.image);
      if (REGISTRY) {
        check(url.startsWith(REGISTRY + '/'), 'not in the test registry: ' + url);
        const ref = url.slice(REGISTRY.length + 1);
        const i = ref.lastIndexOf(':');
        const res = await fetch('http://' + REGISTRY + '/v2/' + ref.slice(0, i) + '/manifests/' + ref.slice(i + 1), {
          method: 'HEAD',
          headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
        });
        check(res.status === 200, 'the registry answers ' + res.status + ' for ' + url);
      }
      const blockerCell = (await L.textContent('tr[data-name="' + BLOCKER + '"] .image-cell')).trim();
      check(blockerCell === '-', 'a cancelled build shows an image: ' + blockerCell);
      check(await L.isVisible('tr[data-name="' + BLOCKER + '"] .status[data-status="Cancelled"]'), 'the blocker is not shown Cancelled');
      await screenshot(L, 'list-succeeded');
    });

    await step('the Image URL is copyable', async () => {
      const url = (await L.textContent('tr[data-name="' + SPEC + '"] .image-url')).trim();
      await L.click('button[aria-label="Copy image URL of ' + SPEC + '"]');
      await L.waitForSelector('tr[data-name="' + SPEC + '"] button.copy:has-text("Copied")');
      const clip = await L.evaluate(() => navigator.clipboard.readText());
      check(clip === url, 'clipboard: ' + clip);
    });

    /* ---- edit ---- */
    await step('View from the list: the spec read-only, with an Edit button', async () => {
      await J.goto(URL_A + '/#/specs');
      await J.click('a[aria-label="View ' + SPEC + '"]');
      await J.waitForSelector('#spec-form');
      check(await J.getAttribute('#f-pip', 'readonly') !== null && await J.getAttribute('#f-baseImage', 'readonly') !== null, 'the view is editable');
      check(!(await J.isVisible('#save')), 'a Save button in the view');
      await J.click('#edit-spec');
      await J.waitForURL(/#\/specs\/e2e-demo\/edit$/);
    });

    await step('Edit: Info tab with the name read-only; saving unchanged says "no change, nothing to build"', async () => {
      await J.waitForSelector('#spec-form #save');
      check(await J.getAttribute('#f-name', 'readonly') !== null, 'the name is editable');
      check(await J.inputValue('#f-pip') === PIP, 'the pip box: ' + await J.inputValue('#f-pip'));
      await J.click('#save');
      await J.waitForSelector('#form-notice:has-text("no change, nothing to build")');
      const jobs = (await api(URL_A, 'GET', '/specs/' + SPEC + '/jobs')).data;
      check(jobs.total === 1, 'jobs: ' + jobs.total);
      await screenshot(J, 'edit-unchanged');
    });

    let second = null;
    await step('Edit: adding a package queues a second revision, shown first in Jobs', async () => {
      await J.fill('#f-pip', PIP + '\n' + PIP2);
      await J.click('#save');
      await J.waitForSelector('#tab-jobs[aria-selected=true]');
      await until('two job rows', () => J.evaluate(() => document.querySelectorAll('#job-rows tr[data-id]').length === 2), 10000);
      const ids = await J.$$eval('#job-rows tr[data-id]', (trs) => trs.map((tr) => Number(tr.dataset.id)));
      check(ids[0] > ids[1], 'not newest first: ' + ids.join(','));
      second = ids[0];
      const revs = await J.$$eval('#job-rows tr[data-id] td:nth-child(2)', (tds) => tds.map((td) => td.textContent));
      check(revs[0] !== revs[1] && revs.every((r) => r.startsWith(SPEC + ':')), 'revisions: ' + revs.join(', '));
      await J.waitForSelector('#job-rows tr[data-id="' + second + '"][data-phase="Succeeded"]', { timeout: BUILD_MS });
      const dur = await J.textContent('#job-rows tr[data-id="' + second + '"] td:nth-child(5)');
      check(/\d/.test(dur), 'no duration: ' + dur);
      const img = await J.textContent('#job-rows tr[data-id="' + second + '"] .image-url');
      check(img.includes(SPEC), 'no image in the Jobs row');
      await screenshot(J, 'jobs-two-revisions');
    });

    await step('Rebuild queues a build of the same revision (a third row, newest first)', async () => {
      check(await J.isEnabled('#rebuild'), 'Rebuild disabled');
      await J.click('#rebuild');
      await until('three job rows', () => J.evaluate(() => document.querySelectorAll('#job-rows tr[data-id]').length === 3), 10000);
      const revs = await J.$$eval('#job-rows tr[data-id] td:nth-child(2)', (tds) => tds.map((td) => td.textContent));
      check(revs[0] === revs[1] && revs[1] !== revs[2], 'revisions: ' + revs.join(', '));
      const id = await J.getAttribute('#job-rows tr[data-id]:first-child', 'data-id');
      check(Number(id) > second, 'the rebuild is not first');
      /* an unchanged revision rebuilds from the step cache in moments */
      await J.waitForSelector('#job-rows tr[data-id="' + id + '"][data-phase="Succeeded"]', { timeout: BUILD_MS });
    });

    await step('a failed build shows its reason at the top of the job view', async () => {
      const r = await api(URL_A, 'POST', '/specs', { name: 'e2e-broken', baseImage: BASE, packages: { apt: ['kiln-e2e-no-such-package'] } });
      check(r.status === 201, 'POST /specs: ' + r.status);
      const id = await until('the broken build to fail', async () => {
        const sp = (await api(URL_A, 'GET', '/specs/e2e-broken')).data;
        if (sp.status === 'Succeeded') throw new Error('it Succeeded');
        return sp.status === 'Failed' ? sp.jobId : null;
      }, BUILD_MS, 500);
      const job = (await api(URL_A, 'GET', '/jobs/' + id)).data;
      await J.goto(URL_A + '/#/jobs/' + id);
      await J.waitForSelector('#job-failure:not([hidden])');
      const text = await J.textContent('#job-failure');
      check(text.includes('Build failed') && job.error && text.includes(job.error), 'failure box: ' + text);
      const above = await J.evaluate(() => {
        const f = document.getElementById('job-failure').getBoundingClientRect();
        const l = document.getElementById('job-log').getBoundingClientRect();
        return f.top < l.top;
      });
      check(above, 'the reason is not above the log');
      check(await J.isVisible('.head-status .status[data-status="Failed"]'), 'no Failed badge');
      await screenshot(J, 'job-failed');
    });

    /* ---- delete ---- */
    await step('Delete asks for confirmation naming the spec; Cancel keeps it', async () => {
      await J.goto(URL_A + '/#/specs');
      await J.waitForSelector('tr[data-name="' + SPEC + '"]');
      await J.click('button[aria-label="Delete ' + SPEC + '"]');
      await J.waitForSelector('#confirm[open]');
      check((await J.textContent('#confirm-text')).includes('“' + SPEC + '”'), 'the dialog does not name the spec');
      await screenshot(J, 'delete-dialog');
      await J.click('#confirm-cancel');
      await J.waitForSelector('#confirm', { state: 'hidden' });
      check((await api(URL_A, 'GET', '/specs/' + SPEC)).status === 200, 'deleted although cancelled');
      /* the keyboard: Escape closes it too */
      await J.focus('button[aria-label="Delete ' + SPEC + '"]');
      await J.keyboard.press('Enter');
      await J.waitForSelector('#confirm[open]');
      await J.keyboard.press('Escape');
      await J.waitForSelector('#confirm', { state: 'hidden' });
      check((await api(URL_A, 'GET', '/specs/' + SPEC)).status === 200, 'deleted after Escape');
    });

    await step('Delete + OK: the spec is gone from the list and the API', async () => {
      await J.click('button[aria-label="Delete ' + SPEC + '"]');
      await J.waitForSelector('#confirm[open]');
      await J.click('#confirm-ok');
      await J.waitForSelector('tr[data-name="' + SPEC + '"]', { state: 'detached' });
      check((await api(URL_A, 'GET', '/specs/' + SPEC)).status === 404, 'still in the API');
      check((await api(URL_A, 'GET', '/jobs/' + demoJob)).status === 404, 'its jobs are still there');
      await L.waitForSelector('tr[data-name="' + SPEC + '"]', { state: 'detached', timeout: 10000 });
      await screenshot(J, 'list-after-delete');
    });
    /* leave the registry-less part its own pages */
    await L.close();
    L = null;
    await K.close();
    K = null;

    /* ---- no registry: banner, building disabled, paging, search, sort ---- */
    const B = watch(await ctx.newPage(), 'no-registry page');
    await step('without a registry: a banner names the settings and building is disabled', async () => {
      await B.goto(URL_B + '/#/specs');
      await B.waitForSelector('#banner:not([hidden])');
      const text = await B.textContent('#banner');
      check(/image registry not found/i.test(text), 'banner: ' + text);
      check(/KILN_REGISTRY_ENDPOINT|PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT/.test(text), 'the banner names no setting: ' + text);
      const bodies = [];
      for (let i = 1; i <= 55; i++) {
        bodies.push(api(URL_B, 'POST', '/specs', { name: 'page-' + String(i).padStart(2, '0'), baseImage: BASE, packages: { pip: [PIP] } }));
      }
      const res = await Promise.all(bodies);
      check(res.every((r) => r.status === 201), 'creating specs: ' + res.map((r) => r.status).join(','));
      await B.goto(URL_B + '/#/specs/page-01/jobs');
      await B.waitForSelector('#job-rows tr.empty');
      check(await B.isDisabled('#rebuild'), 'Rebuild is enabled without a registry');
      await B.goto(URL_B + '/#/specs/new');
      await B.waitForSelector('#build-note:has-text("nothing is built")');
    });

    await step('paging past 50 rows, search by name, sort by name', async () => {
      await B.goto(URL_B + '/#/specs');
      await B.selectOption('#order', 'name');
      if (await B.isChecked('#desc')) await B.uncheck('#desc');
      await until('50 rows', () => B.evaluate(() => document.querySelectorAll('#spec-rows tr[data-name]').length === 50
        && document.querySelector('#spec-rows tr[data-name]').dataset.name === 'page-01'), 10000);
      check((await B.textContent('#pager-info')).includes('1–50 of 55'), 'pager: ' + await B.textContent('#pager-info'));
      await screenshot(B, 'noreg-list-banner');
      await B.click('#page-next');
      await until('page 2', () => B.evaluate(() => document.querySelectorAll('#spec-rows tr[data-name]').length === 5), 10000);
      check((await B.textContent('#pager-info')).includes('51–55 of 55'), 'pager: ' + await B.textContent('#pager-info'));
      check(await B.isDisabled('#page-next'), 'Next enabled on the last page');
      await B.click('#page-prev');
      await B.check('#desc');
      await until('descending', () => B.evaluate(() => {
        const r = document.querySelector('#spec-rows tr[data-name]');
        return r && r.dataset.name === 'page-55';
      }), 10000);
      await B.fill('#search', 'page-4');
      await until('search results', () => B.evaluate(() => {
        const names = Array.from(document.querySelectorAll('#spec-rows tr[data-name]')).map((r) => r.dataset.name);
        return names.length === 10 && names.every((x) => x.startsWith('page-4'));
      }), 10000);
      await B.fill('#search', 'no-such-spec');
      await B.waitForSelector('#spec-rows tr.empty');
      await B.fill('#search', '');
    });

    await step('keyboard: tabs switch with the arrow keys, focus is visible on controls', async () => {
      await B.goto(URL_B + '/#/specs/page-02/edit');
      await B.waitForSelector('#spec-form');
      await B.focus('#tab-info');
      await B.keyboard.press('ArrowRight');
      await B.waitForSelector('#tab-jobs[aria-selected=true]');
      check(await B.evaluate(() => document.activeElement.id) === 'tab-jobs', 'focus did not move to the Jobs tab');
      check(await B.isHidden('#panel-info'), 'the Info panel is still shown');
      await B.keyboard.press('ArrowLeft');
      await B.waitForSelector('#tab-info[aria-selected=true]');
      /* Tab from the name field reaches the next fields in order */
      await B.focus('#f-name');
      await B.keyboard.press('Tab');
      check(await B.evaluate(() => document.activeElement.id) === 'f-description', 'Tab order: ' + await B.evaluate(() => document.activeElement.id));
    });

    await step('phone width: the list, form and job pages fit without sideways scrolling', async () => {
      await B.setViewportSize({ width: 390, height: 844 });
      const fits = () => B.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
      await B.goto(URL_B + '/#/specs');
      await B.waitForSelector('#spec-rows tr[data-name]');
      check(await fits(), 'the list is wider than the phone');
      await screenshot(B, 'phone-list');
      await B.goto(URL_B + '/#/specs/new');
      await B.waitForSelector('#spec-form');
      check(await fits(), 'the form is wider than the phone');
      await screenshot(B, 'phone-create');
      await J.setViewportSize({ width: 390, height: 844 });
      await J.goto(URL_A + '/#/specs/' + BLOCKER + '/jobs');
      await J.waitForSelector('#job-rows tr[data-id]');
      check(await J.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'the Jobs tab is wider than the phone');
      await screenshot(J, 'phone-jobs');
      await J.goto(URL_A + '/#/jobs/' + blockerJob);
      await J.waitForSelector('#job-log');
      await screenshot(J, 'phone-job-cancelled');
    });

    await step('logging out forgets the token', async () => {
      await B.click('#logout');
      await B.waitForSelector('#login-form');
      check(await B.evaluate(() => sessionStorage.getItem('kiln.adminToken')) === null, 'the token is still kept');
    });

    ok(pageErrors.length === 0, 'no JavaScript errors or CSP refusals on any page', pageErrors.join('\n'));
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (e) {
  ok(false, 'the test ran to its end', (e && e.stack) || String(e));
}
console.log('1..' + n);
process.exitCode = failed ? 1 : 0;
