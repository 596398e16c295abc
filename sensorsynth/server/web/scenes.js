// The live page's Scene panel: which scene the installation plays, the next scheduled change and the level
// cap (from the status' `scene`, and the `scene` message the server pushes on every change), and a switch by
// hand: a scene, the admin token, Switch (the server refuses without the token: a scene changes the whole room).
//
// The token is typed each time and never stored: the page's address holds the players' token, not this one.

const $ = (id) => document.getElementById(id);

export class SceneView {
  constructor(send) {
    this.send = send;
    this.state = null;
    $("scene-switch").addEventListener("click", () => this.switchTo());
  }

  // The status' `scene` (null: this server plays no scenes).
  onStatus(status) {
    if (!("scene" in status)) return;
    this.show(status.scene, status.limiter);
  }

  // A `scene` message: the answer to ours, or a change someone else (or the schedule) made.
  onScene(msg) {
    this.show(msg, null);
  }

  show(scene, limiter) {
    const panel = $("scene-panel");
    panel.hidden = !scene;
    if (!scene) return;
    const changed = !this.state || this.state.name !== scene.name;
    this.state = scene;
    $("scene-name").textContent = scene.name ?? "–";
    $("scene-source").textContent = scene.source ? `(${scene.source}${scene.held ? ", held until the next change" : ""})` : "";
    $("scene-next").textContent = scene.next_at
      ? `next: ${scene.next} at ${new Date(scene.next_at).toLocaleString()}`
      : "no scheduled change";
    const cap = scene.level_cap_dbfs ?? limiter?.cap_dbfs;
    const reduction = limiter?.gain_reduction_db;
    $("scene-cap").textContent = typeof cap === "number"
      ? `level cap ${cap.toFixed(1)} dBFS${typeof reduction === "number" ? ` · limiting ${reduction.toFixed(1)} dB` : ""}`
      : "";
    const select = $("scene-choice");
    const names = scene.scenes ?? [];
    if (select.options.length !== names.length || [...select.options].some((o, i) => o.value !== names[i])) {
      select.replaceChildren(...names.map((n) => new Option(n, n)));
    }
    if (changed) select.value = scene.name;
  }

  switchTo() {
    const name = $("scene-choice").value;
    const admin = $("scene-admin").value;
    if (!name) return;
    this.send({ type: "scene", name, admin: admin || null });
  }
}
