// A phone's motion sensors as sensor frames (sensorsynth/protocol/ws.py, SensorMsg kind "motion"):
//
//   values = [acceleration x, y, z (m/s², without gravity),
//             rotation rate alpha, beta, gamma (deg/s),
//             orientation alpha, beta, gamma (deg)]
//
// One frame per `devicemotion` event, so frames come at the device's own rate (60 Hz on most phones), capped
// at `maxRateHz` to stay well inside the server's per-client message rate. Orientation comes from the latest
// `deviceorientation` event. When the device gives no gravity-free acceleration (`acceleration` null: some
// Android phones), gravity is estimated with a low-pass filter (time constant 0.25 s) and subtracted, so a
// phone lying still reads about zero whichever way up it lies. A device with orientation but no motion
// events (some tablets, laptops) still streams: its orientation events make frames with zero motion.

const GRAVITY_TAU_S = 0.25;
const ORIENTATION_ONLY_AFTER_MS = 250;  // no devicemotion for this long: orientation events make the frames

// The event's time on the performance.now() clock (older browsers stamped events with the epoch time).
const stamp = (e) => {
  const now = performance.now();
  return e.timeStamp > 0 && e.timeStamp <= now + 5 ? e.timeStamp : now;
};
const finite = (x) => (typeof x === "number" && Number.isFinite(x) ? x : null);
const round = (x, digits) => {
  const m = 10 ** digits;
  return Math.round(x * m) / m;
};

// The permission prompt (iOS 13+ Safari, and browsers that copy it). It must be *called* synchronously from
// the tap handler, before any await, or the browser refuses it as not user-initiated; so both requests
// are started here at once and only then awaited. Resolves to "granted", "denied" or "not-needed".
export function requestMotionPermission() {
  const asks = [];
  const M = window.DeviceMotionEvent;
  const O = window.DeviceOrientationEvent;
  if (M && typeof M.requestPermission === "function") asks.push(M.requestPermission());
  if (O && typeof O.requestPermission === "function") asks.push(O.requestPermission());
  if (!asks.length) return Promise.resolve("not-needed");
  return Promise.allSettled(asks).then((results) => {
    const first = results[0];  // motion decides: orientation alone cannot shake anything
    if (first.status === "rejected") throw first.reason;
    return first.value === "granted" ? "granted" : "denied";
  });
}

export function motionSupported() {
  return "DeviceMotionEvent" in window || "DeviceOrientationEvent" in window;
}

export class MotionReader {
  constructor({ onFrame, maxRateHz = 200 } = {}) {
    this.onFrame = onFrame;
    this.minGapMs = 1000 / maxRateHz - 0.5;
    this.running = false;
    this.orientation = [0, 0, 0];
    this.gravity = null;          // the low-pass estimate, when the device gives no gravity-free acceleration
    this.accelSource = null;      // "device" (gravity removed by the device) or "filtered" (by us)
    this.lastFrameAt = -Infinity;
    this.lastMotionAt = -Infinity;
    this.rateHz = 0;              // frames per second, smoothed
    this.intervalMs = null;       // what the device says its motion interval is
    this.events = { motion: 0, orientation: 0 };
    this.skipped = 0;             // events over the rate cap
    this.onMotion = this.onMotion.bind(this);
    this.onOrientation = this.onOrientation.bind(this);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.gravity = null;
    window.addEventListener("devicemotion", this.onMotion);
    window.addEventListener("deviceorientation", this.onOrientation);
  }

  stop() {
    this.running = false;
    window.removeEventListener("devicemotion", this.onMotion);
    window.removeEventListener("deviceorientation", this.onOrientation);
  }

  onOrientation(e) {
    this.events.orientation++;
    this.orientation = [finite(e.alpha) ?? 0, finite(e.beta) ?? 0, finite(e.gamma) ?? 0];
    const now = stamp(e);
    if (now - this.lastMotionAt > ORIENTATION_ONLY_AFTER_MS) this.emit([0, 0, 0], [0, 0, 0], now);
  }

  onMotion(e) {
    this.events.motion++;
    const now = stamp(e);
    const dtS = Number.isFinite(this.lastMotionAt) ? Math.min(0.5, Math.max(0.001, (now - this.lastMotionAt) / 1000)) : 0;
    this.lastMotionAt = now;
    if (finite(e.interval)) this.intervalMs = e.interval;
    const acc = this.acceleration(e, dtS);
    const r = e.rotationRate;
    const rot = [finite(r?.alpha) ?? 0, finite(r?.beta) ?? 0, finite(r?.gamma) ?? 0];
    this.emit(acc, rot, now);
  }

  acceleration(e, dtS) {
    const a = e.acceleration;
    if (a && finite(a.x) !== null && finite(a.y) !== null && finite(a.z) !== null) {
      this.accelSource = "device";
      return [a.x, a.y, a.z];
    }
    const g = e.accelerationIncludingGravity;
    if (!g || finite(g.x) === null || finite(g.y) === null || finite(g.z) === null) return [0, 0, 0];
    this.accelSource = "filtered";
    const raw = [g.x, g.y, g.z];
    if (this.gravity === null) {
      this.gravity = raw.slice();  // start from the first reading: still reads zero at once
    } else {
      const k = 1 - Math.exp(-dtS / GRAVITY_TAU_S);
      for (let i = 0; i < 3; i++) this.gravity[i] += k * (raw[i] - this.gravity[i]);
    }
    return raw.map((x, i) => x - this.gravity[i]);
  }

  emit(acc, rot, now) {
    const gap = now - this.lastFrameAt;
    if (gap < this.minGapMs) {
      this.skipped++;
      return;
    }
    if (Number.isFinite(this.lastFrameAt) && gap < 2000) {
      const hz = 1000 / Math.max(1, gap);
      this.rateHz = this.rateHz ? this.rateHz + 0.1 * (hz - this.rateHz) : hz;
    }
    this.lastFrameAt = now;
    const values = [
      round(acc[0], 4), round(acc[1], 4), round(acc[2], 4),
      round(rot[0], 3), round(rot[1], 3), round(rot[2], 3),
      round(this.orientation[0], 3), round(this.orientation[1], 3), round(this.orientation[2], 3),
    ];
    this.onFrame?.({ values, t: now / 1000, eventTime: now });
  }
}
