"use strict";
// The console's one script (served from the appliance: the CSP allows scripts from 'self' only).
// The job page polls /ui/jobs/{id}/state every second until the job is final; the dashboard
// polls /ui/state and redraws its jobs table (every 2 s while a job runs, 10 s otherwise).
(function () {
  function set(elId, text) { var e = document.getElementById(elId); if (e) e.textContent = text; }

  var job = document.getElementById("job");
  if (job) {
    var id = job.getAttribute("data-job");
    var tick = function () {
      fetch("/ui/jobs/" + encodeURIComponent(id) + "/state", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s) { setTimeout(tick, 3000); return; }
          set("state", s.state); set("progress", s.progress); set("rate", s.rate); set("eta", s.eta);
          var bar = document.getElementById("bar");
          if (bar) { bar.max = Math.max(1, s.bytes_total); bar.value = s.bytes_done; }
          var ol = document.getElementById("events");
          if (ol && ol.children.length !== s.events.length) {
            ol.textContent = "";
            s.events.forEach(function (t) { var li = document.createElement("li"); li.textContent = t; ol.appendChild(li); });
          }
          if (s.reason && !document.getElementById("reason")) {
            var p = document.createElement("p"); p.id = "reason"; p.className = "err"; p.setAttribute("role", "alert");
            p.textContent = s.reason; job.appendChild(p);
          }
          if (!s.final) setTimeout(tick, 1000);
        })
        .catch(function () { setTimeout(tick, 3000); });
    };
    if (job.getAttribute("data-final") !== "true") setTimeout(tick, 1000);
  }

  var rows = document.getElementById("job-rows");
  if (rows) {
    var cell = function (tr, cls, text, num) {
      var td = document.createElement("td");
      td.className = (num ? "num " : "") + cls; td.textContent = text; tr.appendChild(td);
    };
    var draw = function (jobs) {
      var body = document.createDocumentFragment();
      jobs.forEach(function (j) {
        var tr = document.createElement("tr"); tr.setAttribute("data-job", j.id);
        var td = document.createElement("td"); var a = document.createElement("a");
        a.className = "job"; a.href = "/ui/jobs/" + encodeURIComponent(j.id); a.textContent = j.id;
        td.appendChild(a); tr.appendChild(td);
        cell(tr, "kind", j.kind); cell(tr, "state", j.state); cell(tr, "agent", j.agent);
        cell(tr, "progress", j.progress, true); cell(tr, "bytes", j.bytes, true);
        cell(tr, "rate", j.rate, true); cell(tr, "eta", j.eta, true); cell(tr, "created", j.created);
        body.appendChild(tr);
      });
      rows.textContent = ""; rows.appendChild(body);
    };
    var poll = function () {
      fetch("/ui/state", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s) { setTimeout(poll, 10000); return; }
          draw(s.jobs);
          set("jobs-running", String(s.jobs_running)); set("agents-online", String(s.agents_online));
          setTimeout(poll, s.jobs_running > 0 ? 2000 : 10000);
        })
        .catch(function () { setTimeout(poll, 10000); });
    };
    setTimeout(poll, 2000);
  }
})();
