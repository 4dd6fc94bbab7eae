/* gpupool portal: a job's page follows the job (state, reason, log) while it is not over.
   Small and without libraries; the pages work without it (a "Refresh" link). */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var HIDDEN_POLL_MS = 10000;

  function followJob(root) {
    var id = root.getAttribute("data-job");
    var stateEl = document.getElementById("job-state");
    var waiting = document.getElementById("job-waiting");
    var reasonEl = document.getElementById("job-reason");
    var estEl = document.getElementById("job-est-start");
    var logEl = document.getElementById("job-log");
    var emptyEl = document.getElementById("job-log-empty");
    var live = document.getElementById("job-live");
    var state = root.getAttribute("data-state");
    var final = root.getAttribute("data-final") === "1";
    var offset = logEl ? parseInt(logEl.getAttribute("data-offset"), 10) || 0 : 0;
    var attempt = logEl ? parseInt(logEl.getAttribute("data-attempt"), 10) || 0 : 0;
    var logDone = !logEl;
    var gone = false; // signed out, or the job no longer ours to see: stop following
    var timer = null;
    var busy = false;

    if (live) live.hidden = false;

    function showState(data) {
      var badge = document.createElement("span");
      badge.className = "state state-" + data.state;
      badge.textContent = data.state_label;
      stateEl.textContent = "";
      stateEl.appendChild(badge);
      stateEl.setAttribute("data-state", data.state);
      root.setAttribute("data-state", data.state);
      if (waiting) waiting.hidden = data.state !== "queued";
      if (reasonEl) {
        reasonEl.textContent = "";
        if (data.headline) {
          var strong = document.createElement("strong");
          strong.textContent = data.headline;
          reasonEl.appendChild(strong);
          if (data.reason) reasonEl.appendChild(document.createTextNode(": "));
        }
        reasonEl.appendChild(document.createTextNode(data.reason || ""));
      }
      if (estEl) estEl.textContent = data.est_start_text || "";
    }

    function refreshSections() {
      // The facts (times, allocations, the cancel button) and the usage, from the page itself.
      return fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var parts = document.querySelectorAll("[data-refresh]");
          for (var i = 0; i < parts.length; i++) {
            var other = fresh.getElementById(parts[i].id);
            if (other) parts[i].innerHTML = other.innerHTML;
          }
        });
    }

    function pollState() {
      return fetch("/jobs/" + id + "/state.json", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          // A redirect is to the sign-in page (the session ended); reload to sign in again.
          if (r.redirected || r.status === 401 || r.status === 403 || r.status === 404) gone = true;
          var type = r.headers.get("Content-Type") || "";
          return r.ok && type.indexOf("application/json") === 0 ? r.json() : null;
        })
        .then(function (data) {
          if (!data) return;
          var changed = data.state !== state;
          state = data.state;
          final = data.final;
          showState(data);
          if (changed) return refreshSections();
        });
    }

    function appendLog(text) {
      if (!text) return;
      logEl.appendChild(document.createTextNode(text));
      if (emptyEl) emptyEl.hidden = true;
      var atEnd = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
      if (atEnd) logEl.scrollTop = logEl.scrollHeight;
    }

    function pollLog() {
      if (logDone || gone) return Promise.resolve();
      var url = "/jobs/" + id + "/log?offset=" + offset + (attempt > 0 ? "&attempt=" + attempt : "");
      return fetch(url, { credentials: "same-origin" }).then(function (r) {
        if (r.status >= 500) return null; // the server or Ray is away for a moment: ask again
        if (!r.ok || (r.headers.get("Content-Type") || "").indexOf("text/plain") !== 0) {
          logDone = true; // no log here (a dispatcher that runs nothing): stop asking
          return null;
        }
        var got = parseInt(r.headers.get("X-Gpupool-Attempt"), 10) || 0;
        var latest = parseInt(r.headers.get("X-Gpupool-Job-Attempt"), 10) || 0;
        var end = parseInt(r.headers.get("X-Gpupool-Log-End"), 10) || 0;
        var size = parseInt(r.headers.get("X-Gpupool-Log-Size"), 10) || 0;
        var done = r.headers.get("X-Gpupool-Log-Done") === "1";
        return r.text().then(function (text) {
          if (attempt === 0 && got > 0) attempt = got;
          appendLog(text);
          offset = end;
          if (done && latest > attempt) {
            attempt += 1; // the next attempt's log starts afresh
            offset = 0;
            appendLog("\n— " + (logEl.getAttribute("data-label-attempt") || "attempt") + " " + attempt + " —\n");
            return pollLog();
          }
          if (end < size) return pollLog(); // more than one answer holds
          if (final && (done || latest === 0)) logDone = true; // over (or never admitted)
        });
      });
    }

    function tick() {
      if (busy) return;
      busy = true;
      timer = null;
      pollState()
        .then(pollLog)
        .catch(function () { /* the server is away for a moment: ask again later */ })
        .then(function () {
          busy = false;
          if (gone || (final && logDone)) {
            if (live) live.hidden = true;
            return;
          }
          timer = window.setTimeout(tick, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
        });
    }

    if (!(final && logDone)) timer = window.setTimeout(tick, POLL_MS);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer !== null && !busy && !gone && !(final && logDone)) {
        window.clearTimeout(timer);
        tick();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var job = document.getElementById("job");
    if (job && window.fetch) followJob(job);
  });
})();
