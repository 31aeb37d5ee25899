// A collector on 127.0.0.1 for the unit tests: it checks what the real one
// checks on the way in (Basic write key, Content-Digest of the body as
// sent, gzip), answers per message with the real answer's shape (accepted,
// duplicate by messageId, rejected with a reason, deleted users), and can
// be scripted to answer a request with a failure instead (500, 429, 413,
// 400, 401). The browser tests run against the real `tally serve`.
import { createHash } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

export type Msg = Record<string, any>;
export interface Scripted {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export class TestCollector {
  /** Every message answered accepted or duplicate, in arrival order. */
  readonly stored: Msg[] = [];
  /** Every request: its messages and the status answered. */
  readonly requests: { messages: Msg[]; status: number; headers: IncomingHttpHeaders }[] = [];
  /** Answers for the next requests, in order; undefined: answer normally. */
  readonly script: ((messages: Msg[]) => Scripted | undefined)[] = [];
  /** Reject a message with a reason (undefined: accept). */
  reject: (m: Msg) => string | undefined = () => undefined;
  /** Users deleted: their messages are rejected `deleted_user` and named in the answer. */
  readonly deleted = new Set<string>();
  private readonly seen = new Set<string>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
    readonly writeKey: string,
  ) {}

  static async start(writeKey = "wk"): Promise<TestCollector> {
    let self: TestCollector | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const answer = (self as TestCollector).answer(req.headers, Buffer.concat(chunks));
        res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers });
        res.end(answer.body ?? "{}");
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    self = new TestCollector(server, `http://127.0.0.1:${port}`, writeKey);
    return self;
  }

  private answer(headers: IncomingHttpHeaders, raw: Buffer): Scripted {
    const auth = `Basic ${Buffer.from(`${this.writeKey}:`).toString("base64")}`;
    if (headers.authorization !== auth) return { status: 401 };
    const digest = `sha-256=:${createHash("sha256").update(raw).digest("base64")}:`;
    if (headers["content-digest"] !== digest) return { status: 400, body: '{"code":"digest_mismatch"}' };
    const json = headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw;
    const messages = (JSON.parse(json.toString("utf8")) as { batch: Msg[] }).batch;
    const scripted = this.script.shift()?.(messages);
    const record = (status: number) => this.requests.push({ messages, status, headers });
    if (scripted) {
      record(scripted.status);
      return scripted;
    }
    record(200);
    const deletedUsers = new Set<string>();
    const results = messages.map((m) => {
      if (m.userId && this.deleted.has(m.userId)) {
        deletedUsers.add(m.userId);
        return { id: m.messageId, status: "rejected", reason: "deleted_user" };
      }
      const reason = this.reject(m);
      if (reason) return { id: m.messageId, status: "rejected", reason };
      if (this.seen.has(m.messageId)) return { id: m.messageId, status: "duplicate" };
      this.seen.add(m.messageId);
      this.stored.push(m);
      return { id: m.messageId, status: "accepted" };
    });
    const body: Record<string, unknown> = { server_time: new Date().toISOString(), results };
    if (deletedUsers.size) body.deleted_users = [...deletedUsers];
    return { status: 200, body: JSON.stringify(body) };
  }

  /** Seqs stored, in arrival order. */
  seqs(): number[] {
    return this.stored.map((m) => m.context.tally.seq as number);
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}
