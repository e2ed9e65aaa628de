// The progress-bar demo: POST /demo/jobs starts a job on the server, which publishes its
// progress into the room job:<id>; this page shows the bar and the log as they stream.
// The job id goes in the URL (#job=<id>): a reloaded page joins the room again, reads
// its history and shows the current step, with every log line once.
//
// ?steps=N&delay=S (seconds per step) start shorter or longer jobs.

import * as roomcast from "/roomcast.js";
import { param, showStatus, Stream } from "./common.js";

const JOB_RE = /^[0-9a-f]{12}$/;
const HISTORY_LIMIT = 1000; // more than a job's messages (at most 101)

const $ = (id) => document.getElementById(id);
const rc = roomcast.connect(location.origin, { name: param("name") });
let current = null; // {id, room, stream}

showStatus(rc, $("status"));
rc.on("message", (m) => {
  if (current && m.room === current.room && isProgress(m) && current.stream.add(m)) render();
});
rc.on("subscribed", ({ room, recovered }) => {
  // The first join, or a rejoin that missed messages: read what the job published so far.
  if (current && room === current.room && recovered !== true) loadHistory(current);
});
rc.on("lost", ({ room }) => {
  if (current && room === current.room) loadHistory(current);
});
$("start").addEventListener("click", startJob);
window.addEventListener("hashchange", () => followHash());
followHash();

function followHash() {
  const id = new URLSearchParams(location.hash.slice(1)).get("job");
  if (id && JOB_RE.test(id) && id !== current?.id) follow(id);
}

async function startJob() {
  const button = $("start");
  button.disabled = true;
  notice("");
  try {
    const response = await fetch("/demo/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(jobSpec()),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      notice(response.status === 429
        ? "Too many jobs are running: try again in a moment."
        : `The job was not started: ${answer.message || response.statusText}`);
      return;
    }
    history.replaceState(null, "", `${location.pathname}${location.search}#job=${answer.job}`);
    follow(answer.job);
  } catch (err) {
    notice(`The job was not started: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

function jobSpec() {
  const spec = {};
  const steps = Number.parseInt(param("steps", ""), 10);
  const delay = Number.parseFloat(param("delay", ""));
  if (Number.isFinite(steps)) spec.steps = steps;
  if (Number.isFinite(delay)) spec.delay = delay;
  return spec;
}

function follow(id) {
  if (current) rc.leave(current.room);
  current = { id, room: `job:${id}`, stream: new Stream() };
  $("job-id").textContent = id;
  document.body.dataset.job = id;
  document.body.dataset.state = "joining";
  render();
  rc.join(current.room).catch((err) => notice(`Cannot follow the job: ${err.message}`));
}

async function loadHistory(job) {
  try {
    const messages = await rc.history(job.room, { limit: HISTORY_LIMIT });
    if (job !== current) return;
    for (const m of messages) if (isProgress(m)) job.stream.add(m);
    render();
    if (!job.stream.byOffset.size) notice("No progress from this job yet.");
  } catch (err) {
    notice(`Cannot read the job's history: ${err.message}`);
  } finally {
    if (job === current) document.body.dataset.state = "live";
  }
}

function isProgress(m) {
  const d = m && m.data;
  return typeof m.offset === "number" && d && Number.isFinite(d.step) && typeof d.log === "string";
}

function render() {
  const messages = current.stream.sorted();
  const log = $("log");
  log.replaceChildren(...messages.map((m) => {
    const li = document.createElement("li");
    li.dataset.offset = String(m.offset);
    li.textContent = m.data.log;
    return li;
  }));
  log.scrollTop = log.scrollHeight;
  const last = messages.length ? messages[messages.length - 1].data : null;
  const percent = last ? Math.max(0, Math.min(100, Math.round(Number(last.percent) || 0))) : 0;
  const bar = $("bar");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.dataset.step = last ? String(last.step) : "";
  bar.dataset.done = String(Boolean(last?.done));
  $("bar-fill").style.width = `${percent}%`;
  $("percent").textContent = `${percent}%`;
  $("step").textContent = last ? `step ${last.step} of ${last.of}${last.done ? ": done" : ""}` : "";
  if (messages.length) notice("");
}

function notice(text) {
  $("notice").textContent = text;
}
