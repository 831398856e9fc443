// Drives the apikeys admin console through its whole flow in headless Chromium (Debian's package,
// through playwright-core; no browser download). Run by tests/it/console.rs, which starts the
// server, prepares the keys named below and checks the credentials this prints with Authenticate.
//
// Environment: CONSOLE_URL, ADMIN_TOKEN (an administrator), USER_TOKEN (a key without the
// administration permission), APP_KEY_ID (a key owned by an app), CHROMIUM (the browser binary),
// SCREENSHOTS (a directory, optional). Prints one JSON line: the credentials the console showed.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const url = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOTS;
const step = (what) => console.error(`console e2e: ${what}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
// A Content-Security-Policy violation or a script error fails the run.
const problems = [];
// (A page answered with an error status, such as the duplicate name's 409, is logged as a failed
// resource: that is the flow, not a problem.)
page.on("console", (message) => {
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) problems.push(message.text());
});
page.on("pageerror", (error) => problems.push(String(error)));
if (process.env.CONSOLE_E2E_DEBUG) {
  page.on("response", async (response) => console.error(`${response.request().method()} ${response.url()} -> ${response.status()} ${JSON.stringify(await response.request().allHeaders())} ${response.status() >= 400 ? await response.text() : ""}`));
}

async function shot(name) {
  if (shots) await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

/// Every visible form control has a label.
async function assertLabelled() {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      .map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, [], "unlabelled form controls");
}

function row(name) {
  return page.locator("#keys tbody tr", { has: page.locator("th", { hasText: new RegExp(`^${name}$`) }) });
}

/// Creates a key on the Create API Key page and returns the credentials shown.
async function create(name, description, permissions) {
  await page.getByRole("link", { name: "Create API Key" }).click();
  await page.getByLabel("Display name").fill(name);
  await page.getByLabel("Description").fill(description);
  for (const permission of permissions) await page.locator(`#perm-${permission}`).check();
  await page.getByRole("button", { name: "Create" }).click();
}

async function credentialsShown() {
  await page.locator("#credentials").waitFor();
  return {
    id: (await page.locator("#cred-id").textContent()).trim(),
    secret: (await page.locator("#cred-secret").textContent()).trim(),
    token: (await page.locator("#cred-token").textContent()).trim(),
  };
}

/// Selects OK on a credentials page and checks the credentials are gone for good.
async function acknowledge(credentials) {
  await page.getByRole("link", { name: "OK" }).click();
  await page.waitForURL(`${url}/keys`);
  const html = await page.content();
  assert(!html.includes(credentials.token) && !html.includes(credentials.secret), "credentials left on the page");
  // Back does not bring them back: the credentials page was replaced in the history, and it was
  // never cached (Cache-Control: no-store).
  await page.goBack();
  const back = await page.content();
  assert(!back.includes(credentials.token) && !back.includes(credentials.secret), "credentials in the history");
  await page.goto(`${url}/keys`);
}

// 1. Sign in, by keyboard alone: the token field has the focus.
step("sign in");
await page.goto(`${url}/`);
await page.waitForURL(`${url}/login`);
await assertLabelled();
await page.waitForFunction(() => document.activeElement && document.activeElement.id === "token", null, { timeout: 5000 });
await page.keyboard.type(process.env.ADMIN_TOKEN);
await page.keyboard.press("Enter");
await page.waitForURL(`${url}/keys`);
await page.locator("h1", { hasText: "API Keys" }).waitFor();

// 2. Create: the permissions grouped by category, the credentials once.
step("create");
await page.getByRole("link", { name: "Create API Key" }).click();
await assertLabelled();
assert(await page.locator("fieldset.category legend").count() >= 2, "permissions grouped by category");
await page.getByLabel("Display name").fill("Deploy bot");
await page.getByLabel("Description").fill("Ships releases");
await page.locator("#perm-read_data").check();
await shot("create");
await page.getByRole("button", { name: "Create" }).click();
const deploy = await credentialsShown();
assert.match(deploy.token, /^apk_/);
assert(deploy.secret.length >= 40);
await page.getByRole("button", { name: "Copy Token" }).waitFor();
await shot("credentials");
await acknowledge(deploy);

// A second key, kept as created (its token must authenticate afterwards).
await create("Reader", "Reads data", ["read_data"]);
const reader = await credentialsShown();
await acknowledge(reader);

// 3. The same name again: refused, the message at the field.
step("duplicate name");
await create("Deploy bot", "", []);
const error = page.locator("#display_name-error");
await error.waitFor();
assert.match(await error.textContent(), /already exists/);
assert.equal(await page.getByLabel("Display name").getAttribute("aria-invalid"), "true");
await page.goto(`${url}/keys`);

// 4. The list shows the keys, searchable by name and filterable by permission.
step("list");
await row("Deploy bot").waitFor();
assert.match(await row("Deploy bot").textContent(), /Ships releases/);
await page.getByLabel("Name contains").fill("deploy");
await page.getByRole("button", { name: "Search" }).click();
assert.equal(await page.locator("#keys tbody tr").count(), 1);
await page.goto(`${url}/keys`);
await page.getByLabel("Holding permission").selectOption("read_data");
await page.getByRole("button", { name: "Search" }).click();
const holding = await page.locator("#keys tbody tr").allTextContents();
assert(holding.length >= 2 && holding.every((text) => text.includes("read_data")), `filtered: ${holding}`);
assert(holding.some((text) => text.includes("Reader")), "Reader holds read_data");
await page.goto(`${url}/keys`);
await shot("list");

// 5. Edit, with the etag: a second editor working from the old version is told, not overwritten.
step("edit");
const editUrl = await row("Deploy bot").getByRole("link", { name: "Edit" }).getAttribute("href");
const other = await context.newPage();
await other.goto(`${url}${editUrl}`);
await page.goto(`${url}${editUrl}`);
await assertLabelled();
await page.getByLabel("Description").fill("Ships releases nightly");
await page.getByRole("button", { name: "Save" }).click();
await page.waitForURL(`${url}/keys`);
assert.match(await row("Deploy bot").textContent(), /Ships releases nightly/);
await other.getByLabel("Description").fill("A stale change");
await other.getByRole("button", { name: "Save" }).click();
await other.locator("#form-error").waitFor();
assert.match(await other.locator("#form-error").textContent(), /changed this key since you opened it/);
await other.close();
await page.goto(`${url}/keys`);
assert.match(await row("Deploy bot").textContent(), /Ships releases nightly/);

// 6. Regenerate (confirmed): new credentials, same ID, shown once.
step("regenerate");
await row("Deploy bot").getByRole("link", { name: "Regenerate secret" }).click();
await page.locator("h1", { hasText: "Regenerate API Key Secret" }).waitFor();
await page.getByRole("button", { name: "Regenerate secret" }).click();
const regenerated = await credentialsShown();
assert.equal(regenerated.id, deploy.id, "same ID");
assert.notEqual(regenerated.token, deploy.token);
await acknowledge(regenerated);

// An app's key: the confirmation warns, and insists on the acknowledgement.
step("app key");
await page.goto(`${url}/keys/${process.env.APP_KEY_ID}/delete`);
await page.locator(".warning", { hasText: "may stop working" }).waitFor();
await page.getByRole("button", { name: "Delete API key" }).click();
await page.locator("#acknowledge-error").waitFor();
await page.getByLabel("I understand the app may stop working").check();
await page.getByRole("button", { name: "Delete API key" }).click();
await page.waitForURL(`${url}/keys`);

// Later lifecycle actions: disable (confirmed) and enable, usage, undelete.
step("disable, enable, usage, undelete");
await row("Reader").getByRole("link", { name: "Disable" }).click();
await page.getByRole("button", { name: "Disable API key" }).click();
await page.waitForURL(`${url}/keys`);
assert.match(await row("Reader").textContent(), /Disabled/);
await row("Reader").getByRole("button", { name: "Enable" }).click();
await page.waitForURL(`${url}/keys`);
assert.match(await row("Reader").textContent(), /Active/);
await row("Reader").getByRole("link", { name: "Usage" }).click();
await page.locator("h1", { hasText: "Usage of Reader" }).waitFor();
assert.match(await page.content(), /Permissions never exercised<\/h2><ul><li><code>read_data/);
await page.goto(`${url}/keys`);
await page.getByLabel("Show deleted").check();
await page.getByRole("button", { name: "Search" }).click();
const appRow = row("Statuspage integration");
assert.match(await appRow.textContent(), /Deleted/);
await appRow.getByRole("button", { name: "Undelete" }).click();
await page.waitForURL(`${url}/keys`);
assert.match(await row("Statuspage integration").textContent(), /Active/);

// 7. Delete (confirmed).
step("delete");
await create("Scratch", "", []);
const scratch = await credentialsShown();
await acknowledge(scratch);
await row("Scratch").getByRole("link", { name: "Delete" }).click();
await page.locator("h1", { hasText: "Delete API Key" }).waitFor();
await page.getByRole("button", { name: "Delete API key" }).click();
await page.waitForURL(`${url}/keys`);
assert.equal(await row("Scratch").count(), 0, "deleted keys leave the list");

// 8. Sign out; a key without the administration permission is refused.
step("non-admin");
await page.getByRole("button", { name: "Sign out" }).click();
await page.waitForURL(`${url}/login`);
await page.goto(`${url}/keys`);
await page.waitForURL(`${url}/login`);
await page.getByLabel("Admin API key token").fill(process.env.USER_TOKEN);
await page.getByRole("button", { name: "Sign in" }).click();
await page.locator("#token-error", { hasText: "does not hold the API Keys administration permission" }).waitFor();

assert.deepEqual(problems, [], "browser console errors (CSP violations, script errors)");
await browser.close();
console.log(JSON.stringify({ deploy, regenerated, reader, scratch }));
