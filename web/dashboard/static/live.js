// Follows a running run: its server-sent events trigger a refresh of the page's live part.
// Open nodes of the calling tree stay open across refreshes. No library, no network beyond
// this server.
(function () {
  "use strict";
  const region = document.getElementById("run-live");
  if (!region || region.dataset.live !== "1") return;
  let pending = null;
  let source = null;

  function openNodes() {
    return new Set(Array.from(region.querySelectorAll("details[open]")).map(
      (d) => d.dataset.callId || d.dataset.attemptId || d.dataset.subtaskNode));
  }

  async function refresh(final) {
    pending = null;
    if (region.dataset.reload === "1") {  // queued: look again shortly
      setTimeout(() => window.location.reload(), 2000);
      return;
    }
    const keep = openNodes();
    const answer = await fetch(region.dataset.fragment, { credentials: "same-origin" });
    if (!answer.ok) return;
    region.innerHTML = await answer.text();
    region.querySelectorAll("details").forEach((d) => {
      const key = d.dataset.callId || d.dataset.attemptId || d.dataset.subtaskNode;
      if (key && keep.has(key)) d.open = true;
    });
    if (final) region.dataset.live = "0";
  }

  function soon() {
    if (pending === null) pending = setTimeout(() => refresh(false), 400);
  }

  source = new EventSource(region.dataset.events, { withCredentials: true });
  source.onmessage = soon;
  ["RunStarted", "DecisionMade", "AttemptStarted", "CallFinished", "AttemptFinished",
   "SubtaskChanged", "BudgetThresholdCrossed"].forEach((kind) => source.addEventListener(kind, soon));
  source.addEventListener("RunFinished", () => {
    source.close();
    if (pending !== null) clearTimeout(pending);
    refresh(true);
  });
  source.addEventListener("RunSnapshot", soon);
  source.addEventListener("error", () => {
    // Refused for good: one last refresh. Otherwise the browser reconnects by itself,
    // resuming after the last event it read (Last-Event-ID).
    if (source.readyState === EventSource.CLOSED) refresh(true);
    else soon();
  });
})();
