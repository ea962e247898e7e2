/* batchmove console: uploads, buttons, paged rows and live progress.
   Vendored, no dependencies. Text from the server is only ever set with textContent. */
(function () {
  "use strict";
  var T = {}, BASE = "/";  // BASE: the console's address, /c/<id>/ (data-base of <body>)
  function t(key) { return T[key] || key; }
  function $(id) { return document.getElementById(id); }
  function show(el, text) { if (el) { el.textContent = text; el.hidden = false; } }
  function said(data) { return (data && (data.text || data.error)) || ""; }
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function runUrl(id, extra) { return BASE + "runs/" + encodeURIComponent(id) + (extra || ""); }
  function api(path) { return BASE + "api/" + path; }
  function post(url, body) {
    var init = { method: "POST", credentials: "same-origin", headers: {} };
    if (body instanceof FormData) { init.body = body; }
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    return fetch(url, init).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; })
        .then(function (data) { return { status: r.status, data: data }; });
    });
  }
  function seconds(s) {
    if (s === null || s === undefined) { return "–"; }
    s = Math.round(s);
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }

  function setupUpload() {
    var form = $("upload-form");
    if (!form) { return; }
    var input = $("file"), zone = $("dropzone"), name = $("file-name");
    input.addEventListener("change", function () {
      name.textContent = input.files.length ? input.files[0].name : "";
    });
    ["dragenter", "dragover"].forEach(function (ev) {
      zone.addEventListener(ev, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (ev) {
      zone.addEventListener(ev, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        name.textContent = input.files[0].name;
      }
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      $("upload-error").hidden = true;
      $("upload-busy").hidden = false;
      $("upload-submit").disabled = true;
      post(api("uploads"), new FormData(form)).then(function (r) {
        if (r.status === 200) { location.href = runUrl(r.data.id); return; }
        $("upload-busy").hidden = true;
        $("upload-submit").disabled = false;
        show($("upload-error"), said(r.data));
      });
    });
  }

  function setupExport() {
    var form = $("export-form");
    if (!form) { return; }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      $("export-error").hidden = true;
      $("export-submit").disabled = true;
      post(api("exports"), new FormData(form)).then(function (r) {
        if (r.status === 200) { location.href = runUrl(r.data.id); return; }
        $("export-submit").disabled = false;
        show($("export-error"), said(r.data));
      });
    });
  }

  function setupJobs() {
    document.querySelectorAll("[data-plan-job]").forEach(function (button) {
      button.addEventListener("click", function () {
        button.disabled = true;
        var name = button.getAttribute("data-plan-job");
        post(api("jobs/" + encodeURIComponent(name) + "/plan")).then(function (r) {
          button.disabled = false;
          if (r.status === 200) { location.href = runUrl(r.data.id); return; }
          show($("jobs-error"), said(r.data));
        });
      });
    });
  }

  function showOverlaps(overlaps) {  // counted at approval: shown, to be acknowledged
    var list = $("overlap-list");
    if (!list) { return; }
    list.textContent = "";
    overlaps.forEach(function (o) {
      var li = document.createElement("li");
      li.textContent = (t("overlap.line") || "").replace("{users}", o.users) + " " + o.job +
        " (" + t("overlap.state." + o.state) + ")";
      list.appendChild(li);
    });
    $("overlaps").hidden = false;
  }

  function setupActions(runId) {
    var approve = $("approve");
    if (approve) {
      approve.addEventListener("click", function () {
        approve.disabled = true;
        var ack = $("acknowledge");
        post(api("runs/" + encodeURIComponent(runId) + "/approve"),
             { digest: approve.getAttribute("data-digest"), acknowledge: !!(ack && ack.checked) }).then(function (r) {
          if (r.status === 200) { location.href = runUrl(runId); return; }
          if (r.status === 409 && r.data.error === "stale") { location.href = runUrl(runId, "?stale=1"); return; }
          if (r.status === 409 && r.data.error === "overlap") { showOverlaps(r.data.overlaps || []); }
          approve.disabled = false;
          show($("action-error"), said(r.data));
        });
      });
    }
    document.querySelectorAll("[data-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        var verb = button.getAttribute("data-action");
        button.disabled = true;
        post(api("runs/" + encodeURIComponent(runId) + "/" + verb)).then(function (r) {
          if (r.status === 200 && verb === "discard") { location.href = BASE; return; }
          if (r.status === 200) { location.href = runUrl(verb === "rollback" || verb === "plan" ? r.data.id : runId); return; }
          button.disabled = false;
          show($("action-error"), said(r.data));
        });
      });
    });
  }

  function setupRows(runId) {
    var table = $("rows");
    if (!table) { return; }
    var status = table.getAttribute("data-status"), offset = 0, size = 50, total = 0;
    function load() {
      var url = api("runs/" + encodeURIComponent(runId) + "/rows?status=") +
        encodeURIComponent(status) + "&offset=" + offset + "&limit=" + size;
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); })
        .then(function (page) {
          if (page.loading) { setTimeout(load, 1000); return; }
          if (page.error) { return; }
          total = page.total || 0;
          $("rows-card").hidden = total === 0;
          var body = table.tBodies[0];
          body.textContent = "";
          (page.rows || []).forEach(function (row) {
            var tr = document.createElement("tr");
            cell(tr, row.row, "num"); cell(tr, row.openid, "mono"); cell(tr, row.target);
            cell(tr, t("plan." + row.status) === "plan." + row.status ? row.status : t("plan." + row.status));
            var why = cell(tr, row.reason_text || row.reason);
            if (row.reason && row.reason !== why.textContent) { why.title = row.reason; }  // as written
            body.appendChild(tr);
          });
          $("rows-range").textContent = total ? (offset + 1) + "–" + Math.min(offset + size, total) + " / " + total : "";
          $("rows-prev").disabled = offset === 0;
          $("rows-next").disabled = offset + size >= total;
        });
    }
    $("rows-prev").addEventListener("click", function () { offset = Math.max(0, offset - size); load(); });
    $("rows-next").addEventListener("click", function () { if (offset + size < total) { offset += size; load(); } });
    load();
  }

  function showTargets(targets) {
    var table = $("targets-progress");
    if (!table) { return; }
    var body = table.tBodies[0];
    body.textContent = "";
    (targets || []).forEach(function (x) {
      var tr = document.createElement("tr");
      cell(tr, x.target, "target-name");
      var bar = document.createElement("progress");
      bar.max = x.total || 1; bar.value = x.total - x.pending;
      bar.setAttribute("aria-label", x.target + ": " + (x.total - x.pending) + " / " + x.total);
      cell(tr, "").appendChild(bar);
      cell(tr, x.moved, "num"); cell(tr, x.already, "num"); cell(tr, x.failed, "num");
      cell(tr, x.pending, "num");
      body.appendChild(tr);
    });
  }

  function showFigures(d) {  // the headline and the table, from one event (one count)
    var c = d.counts || {};
    $("fig-moved").textContent = d.moved;
    $("fig-already").textContent = c.already || 0;
    $("fig-failed").textContent = d.failed;
    $("fig-pending").textContent = d.pending;
    var bar = $("progress-bar");
    bar.max = d.total || 1; bar.value = d.total - d.pending;
    showTargets(d.targets);
  }

  function setupProgress(runId, state) {
    if (!$("progress")) { return; }
    var events = api("runs/" + encodeURIComponent(runId) + "/events");
    if (state !== "running") {  // the stream's one last event: the figures as they ended
      fetch(events, { credentials: "same-origin" })
        .then(function (r) { return r.text(); }).then(function (text) {
          var line = text.split("\n").filter(function (l) { return l.indexOf("data: ") === 0; }).pop();
          if (line) { showFigures(JSON.parse(line.slice(6))); }
        });
      return;
    }
    var source = new EventSource(events);
    var banner = $("conn-banner"), lost = false;
    source.onerror = function () {  // the console went away: the browser retries by itself
      lost = true;
      banner.className = "banner conn";
      show(banner, t("conn.lost"));
    };
    source.onopen = function () {
      if (!lost) { return; }
      lost = false;
      banner.className = "banner conn ok";
      show(banner, t("conn.back"));
      setTimeout(function () { if (!lost) { banner.hidden = true; } }, 3000);
    };
    source.onmessage = function (ev) {
      var d = JSON.parse(ev.data);
      $("fig-phase").textContent = t("phase." + d.phase);
      $("fig-speed").textContent = d.users_per_s;
      $("fig-eta").textContent = seconds(d.eta_s);
      showFigures(d);
      if (d.state !== "running") {
        source.close();
        setTimeout(function () { location.href = runUrl(runId); }, 300);
      }
    };
  }

  function localTimes() {  // UTC from the server, shown in the reader's own time zone
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        el.textContent = d.toLocaleString(document.documentElement.lang || undefined,
          { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
      }
    });
  }

  function setupSettings() {
    document.querySelectorAll("[data-end-sessions]").forEach(function (button) {
      button.addEventListener("click", function () {
        button.disabled = true;
        post(api("sessions/end"), { name: button.getAttribute("data-end-sessions") }).then(function (r) {
          if (r.status === 200) { location.reload(); return; }
          button.disabled = false;
          show($("action-error"), said(r.data));
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var data = $("i18n");
    T = data ? JSON.parse(data.textContent) : {};
    BASE = document.body.getAttribute("data-base") || "/";
    localTimes();
    setupSettings();
    setupUpload();
    setupJobs();
    setupExport();
    var run = $("run");
    if (run) {
      var id = run.getAttribute("data-run-id"), state = run.getAttribute("data-state");
      setupActions(id);
      setupRows(id);
      setupProgress(id, state);
    }
  });
})();
