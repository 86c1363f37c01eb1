// dtq dashboard: live parts of the pages, the chart, confirmations. Plain script, no build step.
// Live parts are HTML rendered (and escaped) by the server; nothing here builds markup from job data.
(function () {
  "use strict";

  const pollMs = Number(document.body.dataset.pollMs) || 2000;
  const status = document.getElementById("live-status");

  function showLive(ok) {
    if (!status) return;
    status.hidden = false;
    status.textContent = ok ? "live" : "reconnecting…";
    status.classList.toggle("stale", !ok);
  }

  // Fetch a region's ?fragment=1 URL every pollMs and swap it in when it changed.
  function follow(region) {
    let last = null;
    async function tick() {
      if (!document.hidden) {
        try {
          const response = await fetch(region.dataset.live, {
            credentials: "same-origin",
            cache: "no-store",
            headers: { Accept: "text/html" },
          });
          if (response.ok) {
            const html = await response.text();
            if (html !== last) {
              region.innerHTML = html;
              region.dispatchEvent(new CustomEvent("dtq:updated", { bubbles: true }));
            }
            last = html;
            region.dataset.refreshed = String(Date.now());
          }
          showLive(response.ok);
        } catch (error) {
          showLive(false);
        }
      }
      if (!region.querySelector("[data-live-stop]")) {
        window.setTimeout(tick, pollMs);
      }
    }
    window.setTimeout(tick, pollMs);
  }

  // --- the chart: jobs finished and failed per minute, on a canvas -----------------

  function niceMax(value) {
    const steps = [1, 2, 5, 10];
    const scale = Math.pow(10, Math.floor(Math.log10(Math.max(value, 1))));
    for (const step of steps) {
      if (step * scale >= value) return step * scale;
    }
    return 10 * scale;
  }

  function colour(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#000";
  }

  function plot(ctx, points, key, box, top, stroke, fill) {
    const step = points.length > 1 ? box.width / (points.length - 1) : 0;
    const y = (value) => box.y + box.height - (value / top) * box.height;
    ctx.beginPath();
    points.forEach((point, i) => {
      const x = box.x + i * step;
      if (i === 0) ctx.moveTo(x, y(point[key]));
      else ctx.lineTo(x, y(point[key]));
    });
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 2;
    ctx.stroke();
    if (fill) {
      ctx.lineTo(box.x + (points.length - 1) * step, box.y + box.height);
      ctx.lineTo(box.x, box.y + box.height);
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
    }
  }

  function axes(ctx, points, box, top, width) {
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.strokeStyle = "#e5e7eb";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const fraction of [0, 0.5, 1]) {
      const y = Math.round(box.y + box.height - fraction * box.height) + 0.5;
      ctx.beginPath();
      ctx.moveTo(box.x, y);
      ctx.lineTo(width - 8, y);
      ctx.stroke();
      ctx.fillText(String(Math.round(top * fraction)), box.x - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const step = points.length > 1 ? box.width / (points.length - 1) : 0;
    points.forEach((point, i) => {
      const minute = new Date(point.minute);
      if (i === points.length - 1 || minute.getUTCMinutes() % 15 === 0) {
        const last = i === points.length - 1;
        ctx.textAlign = last ? "right" : "center";
        ctx.fillText(last ? "now" : minute.toISOString().slice(11, 16) + " UTC", box.x + i * step, box.y + box.height + 6);
      }
    });
  }

  function drawChart() {
    const canvas = document.getElementById("chart");
    const source = document.getElementById("chart-data");
    if (!canvas || !source) return;
    const points = JSON.parse(source.dataset.points || "[]");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const box = { x: 40, y: 8, width: width - 48, height: height - 30 };
    const top = niceMax(Math.max(1, ...points.map((p) => Math.max(p.finished, p.failures))));
    axes(ctx, points, box, top, width);
    plot(ctx, points, "finished", box, top, colour("--finished"), "rgba(37, 99, 235, 0.10)");
    plot(ctx, points, "failures", box, top, colour("--failures"), null);
    const finished = points.reduce((sum, p) => sum + p.finished, 0);
    const failures = points.reduce((sum, p) => sum + p.failures, 0);
    canvas.dataset.points = String(points.length);
    canvas.dataset.finished = String(finished);
    canvas.dataset.failures = String(failures);
    canvas.setAttribute(
      "aria-label",
      `Jobs per minute over the last ${points.length} minutes: ${finished} finished, ${failures} failed or dead`
    );
  }

  // --- forms -------------------------------------------------------------------------

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  document.addEventListener("change", (event) => {
    const field = event.target;
    if (field instanceof HTMLSelectElement && field.hasAttribute("data-autosubmit") && field.form) {
      field.form.submit();
    }
  });

  document.addEventListener("dtq:updated", drawChart);
  window.addEventListener("resize", drawChart);
  document.querySelectorAll("[data-live]").forEach(follow);
  drawChart();
})();
