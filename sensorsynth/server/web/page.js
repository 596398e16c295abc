// What the live page and the phone page share: the toast, the connection line with its reconnect
// countdown, and the Listen / Stop buttons around a Listener (listen.js). Each page keeps its own layout.

let toastTimer = 0;
/** Show a short message in `el` for five seconds. */
export function showToast(el, text) {
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 5000);
}

let countdownTimer = 0;
/** The connection state in words; while reconnecting, a countdown to the next try (c: the Connection). */
export function showConnText(el, state, detail, c) {
  clearInterval(countdownTimer);
  if (state === "connected") {
    el.textContent = "connected";
  } else if (state === "reconnecting") {
    const tick = () => {
      const s = Math.max(0, (c.retryAt - performance.now()) / 1000);
      el.textContent = `reconnecting in ${s.toFixed(0)} s${detail ? ` (${detail})` : ""}`;
    };
    tick();
    countdownTimer = setInterval(tick, 500);
  } else {
    el.textContent = state === "offline" ? "offline" : "connecting…";
  }
}

/** Wire the Listen and Stop buttons (ids listen, stop, listen-info) to `listener`; returns stop(tellServer). */
export function wireListen({ $, conn, listener, sampleRate, toast, onStart = () => {} }) {
  function stop(tellServer = true) {
    if (tellServer) conn.send({ type: "audio", enabled: false });
    listener.stop();
    $("stop").disabled = true;
    $("listen").disabled = !conn.connected;
    $("listen-info").textContent = "";
    $("listen-info").classList.remove("listen-info-bad");
  }
  $("listen").addEventListener("click", () => {
    const rate = sampleRate();
    if (!rate || !conn.connected) {
      toast("not connected yet");
      return;
    }
    $("listen").disabled = true;
    onStart();
    listener.start(rate).then(
      () => {
        conn.send({ type: "audio", enabled: true });
        $("stop").disabled = false;
        $("listen-info").textContent = "starting…";
      },
      (err) => {
        $("listen").disabled = !conn.connected;
        toast(`cannot play audio here: ${err.message}`);
      },
    );
  });
  $("stop").addEventListener("click", () => stop());
  return stop;
}
