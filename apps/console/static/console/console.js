/* Orchard operator console: live task progress (the task websocket), live run curves (the run's
   SSE stream) and copy buttons. No library; served from the package like the admin's own JS. */
(function () {
  "use strict";
  var TERMINAL = { finished: 1, aborted: 1, failed: 1 };
  var RUN_TERMINAL = { completed: 1, failed: 1, stopped: 1 };
  var root = document.querySelector(".console");
  if (!root) return;

  function token() {
    var body = new URLSearchParams({ project: root.dataset.project || "" });
    return fetch(root.dataset.tokenUrl, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": root.dataset.csrf },
    }).then(function (r) {
      if (!r.ok) throw new Error("token " + r.status);
      return r.json();
    }).then(function (data) { return data.token; });
  }

  function fields(scope, name) {
    return scope.querySelectorAll('[data-field="' + name + '"]');
  }
  function setText(scope, name, text) {
    fields(scope, name).forEach(function (el) { el.textContent = text; });
  }
  function setState(scope, name, state) {
    fields(scope, name).forEach(function (el) {
      el.textContent = state;
      el.className = "state state-" + state;
    });
  }
  function backoff(attempt) { return Math.min(10000, 500 * Math.pow(2, attempt)); }

  // --- a task: state, progress and events over ws/projects/<project>/tasks/<task> -------------
  function liveTask(el) {
    var parts = el.dataset.liveTask.split("/");
    var after = parseInt(el.dataset.after || "0", 10) || 0;
    var done = !!TERMINAL[el.dataset.state];
    var attempt = 0;
    var events = document.querySelector("#events tbody");
    if (done) return;

    function progress(value) {
      var percent = Math.round(Math.max(0, Math.min(1, value)) * 100);
      setText(el, "progress", String(percent));
      fields(el, "progress-bar").forEach(function (bar) { bar.style.width = percent + "%"; });
      el.dataset.progress = String(percent);
    }
    function actions(state) {
      var abort = el.querySelector('[data-action="abort"]');
      var retry = el.querySelector('[data-action="retry"]');
      if (abort) abort.hidden = !!TERMINAL[state];
      if (retry) retry.hidden = !(state === "failed" || state === "aborted");
    }
    function handle(ev) {
      if (typeof ev.seq === "number" && ev.seq > after) {
        after = ev.seq;
        if (events) {
          var row = document.createElement("tr");
          [ev.seq, ev.type, JSON.stringify(ev)].forEach(function (v) {
            var td = document.createElement("td");
            td.textContent = String(v).slice(0, 300);
            row.appendChild(td);
          });
          events.appendChild(row);
        }
      }
      if (typeof ev.progress === "number") progress(ev.progress);
      if (ev.type === "state") {
        setState(el, "state", ev.state);
        el.dataset.state = ev.state;
        if (typeof ev.attempts === "number") setText(el, "attempts", String(ev.attempts));
        if (ev.error) {
          setText(el, "error", ev.error);
          var box = document.getElementById("task-error");
          if (box) box.hidden = false;
        }
        actions(ev.state);
        if (TERMINAL[ev.state]) {
          done = true;
          setText(el, "live", "ended");
        }
      }
    }
    function connect() {
      token().then(function (t) {
        var scheme = location.protocol === "https:" ? "wss://" : "ws://";
        var url = scheme + location.host + "/ws/projects/" + encodeURIComponent(parts[0]) +
          "/tasks/" + encodeURIComponent(parts[1]) + "?after=" + after +
          "&token=" + encodeURIComponent(t);
        var ws = new WebSocket(url);
        ws.onopen = function () { attempt = 0; setText(el, "live", "live"); el.dataset.live = "1"; };
        ws.onmessage = function (m) {
          try { handle(JSON.parse(m.data)); } catch (e) { /* not JSON: ignore */ }
          if (done) ws.close();
        };
        ws.onclose = function () {
          el.dataset.live = "";
          if (done) return;
          setText(el, "live", "reconnecting");
          setTimeout(connect, backoff(attempt++));
        };
      }).catch(function () {
        setText(el, "live", "reconnecting");
        setTimeout(connect, backoff(attempt++));
      });
    }
    connect();
  }

  // --- a run: status and curves over its SSE stream ----------------------------------------------
  function liveRun(el) {
    var attempt = 0;
    var last = null;
    function reloadCharts(version) {
      el.querySelectorAll("img[data-chart]").forEach(function (img) {
        var base = img.getAttribute("src").split("?")[0];
        img.setAttribute("src", base + "?v=" + encodeURIComponent(version));
      });
    }
    function connect() {
      token().then(function (t) {
        var source = new EventSource(el.dataset.liveRun + "?token=" + encodeURIComponent(t));
        source.addEventListener("open", function () { attempt = 0; setText(el, "live", "live"); el.dataset.live = "1"; });
        source.addEventListener("status", function (m) {
          var data = JSON.parse(m.data);
          if (data.status) setState(el, "status", data.status);
        });
        source.addEventListener("epoch_end", function (m) {
          var data = JSON.parse(m.data);
          if (m.lastEventId) last = m.lastEventId;
          if (typeof data.epoch === "number") setText(el, "epochs_completed", String(data.epoch));
          reloadCharts(m.lastEventId || data.epoch);
          el.dataset.epochs = String(data.epoch);
        });
        ["complete", "error"].forEach(function (name) {
          source.addEventListener(name, function (m) {
            var data = {};
            try { data = JSON.parse(m.data); } catch (e) { /* a transport error event */ }
            if (name === "error" && !data.type) return;  // EventSource's own error: it retries
            if (data.status) setState(el, "status", data.status);
            reloadCharts("final");
            setText(el, "live", "ended");
            source.close();
          });
        });
        source.onerror = function () {
          if (source.readyState === EventSource.CLOSED) {
            el.dataset.live = "";
            setText(el, "live", "reconnecting");
            setTimeout(connect, backoff(attempt++));
          }
        };
      }).catch(function () { setTimeout(connect, backoff(attempt++)); });
    }
    connect();
  }

  // --- copy buttons --------------------------------------------------------------------------
  function copy(button) {
    var target = document.querySelector(button.dataset.copy);
    if (!target) return;
    var text = target.value || target.textContent;
    var done = function () { setText(document, "copied", "copied"); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(); });
    } else {
      fallback();
    }
    function fallback() {
      target.select && target.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
    }
  }

  document.querySelectorAll("[data-live-task]").forEach(liveTask);
  document.querySelectorAll("[data-live-run]").forEach(liveRun);
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () { copy(b); });
  });
})();
