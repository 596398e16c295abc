// The WebSocket to the server (/ws, same origin), reconnecting by itself with a capped, jittered backoff.
//
// The wire is documented in sensorsynth/protocol/ws.py: JSON text messages with a "type"; binary frames
// are audio. This module knows only the transport: it says hello on every (re)connect, hands decoded
// messages and raw binary frames to its callbacks, and reports its state
// ("connecting", "connected", "reconnecting", "offline").

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10000;

export function socketUrl(loc = window.location) {
  // Follow the page: a page served over https must use wss, or the browser blocks the socket.
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  // A server reachable from the network wants its token: the page address printed at start carries it.
  const token = new URLSearchParams(loc.search || "").get("token");
  return `${scheme}//${loc.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

export class Connection {
  // staleMs (optional, 0 = off): a connection that brings nothing for this long is taken for dead and
  // replaced. A phone whose Wi-Fi dropped or changed often keeps a half-open socket that never closes by
  // itself; a page that asks for pushes (monitor: meter at 20/s) hears from a live server all the time.
  constructor({ url = socketUrl(), hello, onMessage, onBinary, onState, staleMs = 0 }) {
    this.staleMs = staleMs;
    this.lastMessageAt = 0;
    if (staleMs > 0) setInterval(() => this.checkStale(), Math.max(250, staleMs / 4));
    this.url = url;
    this.hello = hello;          // () => the hello message, built fresh so it carries current wishes
    this.onMessage = onMessage;
    this.onBinary = onBinary;
    this.onState = onState;
    this.ws = null;
    this.state = "connecting";
    this.retryMs = FIRST_RETRY_MS;
    this.retryTimer = 0;
    this.retryAt = 0;
    this.attempts = 0;
    this.closedByUs = false;
    // A phone that was asleep or offline: try again at once when the network or the tab comes back.
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.retryNow();
    });
  }

  open() {
    this.closedByUs = false;
    clearTimeout(this.retryTimer);
    this.setState(this.attempts === 0 ? "connecting" : "reconnecting");
    this.attempts += 1;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry(String(err));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => this.send(this.hello());
    ws.onmessage = (ev) => {
      this.lastMessageAt = performance.now();
      if (typeof ev.data !== "string") {
        this.onBinary?.(ev.data);
        return;
      }
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;  // not ours to crash on: the server only sends JSON, a broken frame is dropped
      }
      if (msg && msg.type === "welcome") {
        // Only a welcome proves the server speaks our protocol: reset the backoff then, not on open.
        this.retryMs = FIRST_RETRY_MS;
        this.setState("connected");
      }
      this.onMessage?.(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closedByUs) {
        this.setState("offline");
        return;
      }
      this.scheduleRetry(ev.reason || (ev.code === 1006 ? "connection lost" : `closed, code ${ev.code}`));
    };
    // An error is always followed by close, which does the retry; nothing to do here but not throw.
    ws.onerror = () => {};
  }

  scheduleRetry(why) {
    // Jitter spreads the reconnects of many pages after a server restart.
    const delay = Math.round(this.retryMs * (0.75 + Math.random() * 0.5));
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    this.retryAt = performance.now() + delay;
    this.setState("reconnecting", why);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  checkStale() {
    if (this.state !== "connected" || !this.ws || this.closedByUs) return;
    if (performance.now() - this.lastMessageAt > this.staleMs) this.drop("no data from the server");
  }

  // Give up on the current socket now (its close may never come) and reconnect with the usual backoff.
  drop(why) {
    const ws = this.ws;
    this.ws = null;  // its late close event is ignored: onclose only acts for the current socket
    try {
      ws?.close(4000, "stale");
    } catch {
      // closing a broken socket may throw; it is dropped either way
    }
    this.scheduleRetry(why);
  }

  retryNow() {
    if (this.state === "reconnecting" && !this.closedByUs) {
      this.retryMs = FIRST_RETRY_MS;
      this.open();
    }
  }

  close() {
    this.closedByUs = true;
    clearTimeout(this.retryTimer);
    this.ws?.close(1000, "bye");
  }

  get connected() {
    return this.state === "connected" && this.ws?.readyState === WebSocket.OPEN;
  }

  send(msg) {
    // Inputs made while disconnected are dropped on purpose: playing them late would be wrong.
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  setState(state, detail = "") {
    this.state = state;
    this.onState?.(state, detail, this);
  }
}
