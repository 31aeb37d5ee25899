// What the browser tests run against: the real `tally serve` on 127.0.0.1
// (port 0, a temporary data directory), a static server for the test pages
// and the builds on another 127.0.0.1 port (so every request to the
// collector is cross-origin, as on a real site), and Debian's Chromium
// started by us (so a test can kill its whole process group) and driven
// over CDP by playwright-core.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const WRITE_KEY = "browser-test-write-key";
/** Long: the collector may require a minimum length of admin tokens. */
export const ADMIN_TOKEN = "browser-test-admin-token-0123456789abcdef";

const here = fileURLToPath(new URL(".", import.meta.url));
export const pkgDir = normalize(join(here, "..", ".."));
export const repoDir = normalize(join(pkgDir, "..", ".."));

/** How long a process may take to print its address. */
const START_TIMEOUT_MS = 30_000;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a value other than undefined, or fails after `ms`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function tallyBinary(): string {
  const candidates = [process.env.TALLY_BIN, join(repoDir, "target/debug/tally"), join(repoDir, "target/release/tally")];
  const found = candidates.find((c) => c && existsSync(c));
  if (!found) throw new Error("no tally binary: cargo build -p tally-cli (or set TALLY_BIN)");
  return found;
}

/** Waits for a line of `child`'s stderr matching `pattern`; returns its first group. */
function announced(child: ChildProcess, pattern: RegExp, what: string, log: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${log.join("")}`)), START_TIMEOUT_MS);
    let buffered = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      const text = chunk.toString();
      log.push(text);
      buffered += text;
      const m = pattern.exec(buffered);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] as string);
      }
    });
    child.once("exit", (code) => reject(new Error(`${what} exited (${code}): ${log.join("")}`)));
  });
}

/** The environment of `tally serve`: SQLite in its own directory, whatever the caller's shell says. */
function collectorEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ["TALLY_DATABASE_URL", "TALLY_WRITE_KEYS", "TALLY_ADMIN_TOKEN", "TALLY_CONFIG", "TALLY_LISTEN", "TALLY_DATA_DIR"]) {
    delete env[k];
  }
  return env;
}

/** A running `tally serve`. */
export class Collector {
  private constructor(
    private readonly child: ChildProcess,
    readonly base: string,
    private readonly dir: string,
    readonly log: string[],
  ) {}

  static async start(extra: string[] = []): Promise<Collector> {
    const dir = mkdtempSync(join(tmpdir(), "tally-web-collector-"));
    const log: string[] = [];
    const child = spawn(
      tallyBinary(),
      ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--write-key", WRITE_KEY,
        "--admin-token", ADMIN_TOKEN, ...extra],
      { stdio: ["ignore", "ignore", "pipe"], env: collectorEnv() },
    );
    const base = await announced(child, /listening on (\S+)/, "tally serve", log);
    return new Collector(child, base, dir, log);
  }

  /** GET an admin path; its JSON. */
  async admin<T = any>(path: string): Promise<T> {
    const res = await fetch(this.base + path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const text = await res.text();
    if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
    return JSON.parse(text) as T;
  }

  /** POST an admin path with a JSON body. */
  async adminPost(path: string, body: unknown): Promise<void> {
    const res = await fetch(this.base + path, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  }

  /** Every stored event, as exported (NDJSON): `timestamp` corrected, `originalTimestamp` the device's. */
  async exported(): Promise<any[]> {
    const res = await fetch(`${this.base}/v1/export?format=ndjson`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    if (!res.ok) throw new Error(`export: ${res.status}`);
    return (await res.text()).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }

  /** How many stored events are named `event`. */
  async count(event: string): Promise<number> {
    return (await this.admin<{ count: number }>(`/v1/events/count?event=${encodeURIComponent(event)}`)).count;
  }

  /** The completeness report of an install. */
  install(id: string): Promise<{ max_seq: number; missing: [number, number][]; dropped: number; dropped_by_reason: Record<string, number> }> {
    return this.admin(`/v1/installs/${id}`);
  }

  /** An install's stored events in seq order. */
  async installEvents(id: string): Promise<{ seq: number; type: string; event: string | null }[]> {
    const out: { seq: number; type: string; event: string | null }[] = [];
    for (;;) {
      const page = await this.admin<{ seq: number; type: string; event: string | null }[]>(
        `/v1/installs/${id}/events?after_seq=${out.at(-1)?.seq ?? 0}&limit=10000`,
      );
      out.push(...page);
      if (page.length < 10_000) return out;
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGTERM");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
  ".map": "application/json", ".json": "application/json",
};

/**
 * Serves the test pages (test/browser/pages/ at /), the builds (dist/ at
 * /dist/), the benchmark page (bench/ at /bench/, cross-origin isolated
 * for the finest timer the browser gives), Segment's analytics-next
 * (/analytics-next/) and extra pages given as text, on 127.0.0.1.
 */
export class Pages {
  readonly extra = new Map<string, string>();

  private constructor(
    private readonly server: Server,
    readonly base: string,
  ) {}

  static async start(): Promise<Pages> {
    let self: Pages | undefined;
    const segment = join(pkgDir, "node_modules/@segment/analytics-next/dist/umd");
    const server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      const extra = self?.extra.get(path);
      let file: string | undefined;
      if (path.startsWith("/dist/") || path.startsWith("/bench/")) file = join(pkgDir, path);
      else if (path.startsWith("/analytics-next/")) file = join(segment, path.slice("/analytics-next/".length));
      else file = join(pkgDir, "test/browser/pages", path);
      const body = extra ?? (file && !file.includes("..") && existsSync(file) ? readFileSync(file) : undefined);
      if (body === undefined) {
        res.writeHead(404).end();
        return;
      }
      const isolated = path.startsWith("/bench/")
        ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" }
        : {};
      res.writeHead(200, {
        "content-type": TYPES[extname(path)] ?? "text/html; charset=utf-8",
        "cache-control": "no-store",
        ...isolated,
      });
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    self = new Pages(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** The flags every headless Chromium of the tests runs with. */
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
  // Background tabs keep their timers: the tests run several tabs at once.
  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

/** A Chromium process we started, on a profile directory that can outlive it. */
export class Chromium {
  private constructor(
    private readonly child: ChildProcess,
    readonly browser: Browser,
    readonly profile: string,
  ) {}

  /** Starts Chromium on `profile` (a new temporary one if undefined). */
  static async launch(profile?: string): Promise<Chromium> {
    const dir = profile ?? mkdtempSync(join(tmpdir(), "tally-web-profile-"));
    const executable = process.env.TALLY_CHROMIUM ?? "/usr/bin/chromium";
    const log: string[] = [];
    // Detached: its own process group, which kill9() kills whole.
    const child = spawn(executable, [...FLAGS, "--remote-debugging-port=0", `--user-data-dir=${dir}`, "about:blank"], {
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    const ws = await announced(child, /DevTools listening on (ws:\S+)/, "chromium", log);
    const browser = await chromium.connectOverCDP(ws);
    return new Chromium(child, browser, dir);
  }

  /** The profile's own context (persistent storage). */
  get context(): BrowserContext {
    const context = this.browser.contexts()[0];
    if (!context) throw new Error("no default context");
    return context;
  }

  /** Opens `url` in a new tab of the profile's context, with the page's console in `logs`. */
  async open(url: string, logs?: string[]): Promise<Page> {
    const page = await this.context.newPage();
    if (logs) page.on("console", (m) => logs.push(m.text()));
    page.on("pageerror", (e) => logs?.push(`pageerror: ${e.message}`));
    await page.goto(url);
    return page;
  }

  /** SIGKILL of the whole browser: main process, renderers, utilities. */
  kill9(): Promise<void> {
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    process.kill(-(this.child.pid as number), "SIGKILL");
    return exited;
  }

  /** Closes the browser; removes the profile unless `keep`. */
  async close(keep = false): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await this.browser.close().catch(() => undefined);
      const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
      try {
        process.kill(-(this.child.pid as number), "SIGTERM");
      } catch {
        // Already gone.
      }
      await exited;
    }
    if (!keep) rmSync(this.profile, { recursive: true, force: true });
  }
}

