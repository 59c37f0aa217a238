// The console's only script: the copy button of the event inspector and the live view's rows.
// Served by LeadTrail itself (Content-Security-Policy: default-src 'self'); values from events
// are only ever set as textContent, never parsed as HTML.
"use strict";

const MAX_LIVE_ROWS = 500;

function setUpCopy() {
  const button = document.getElementById("copy-json");
  if (!button) return;
  const status = document.getElementById("copy-status");
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copies).textContent;
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "copied";
    } catch (e) {
      status.textContent = "copy failed: " + e;
    }
  });
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function link(href, text, testid) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  if (testid) a.dataset.testid = testid;
  return a;
}

function liveRow(e) {
  const row = document.createElement("tr");
  row.dataset.testid = "live-event";
  row.dataset.event = e.id;
  row.className = "outcome-" + String(e.outcome).toLowerCase();
  cell(row, e.timestamp);
  const type = cell(row, "");
  type.appendChild(link("/events/" + encodeURIComponent(e.id), e.type, "live-event-type"));
  cell(row, e.outcome);
  const lead = cell(row, "");
  lead.appendChild(link("/leads/" + encodeURIComponent(e.lead_id), e.lead_id, "live-event-lead"));
  cell(row, e.entity_id);
  cell(row, e.price);
  cell(row, e.reason);
  return row;
}

function setUpLive() {
  const body = document.getElementById("live-events");
  if (!body || !body.dataset.stream) return;
  const status = document.getElementById("live-status");
  const source = new EventSource(body.dataset.stream);
  source.addEventListener("open", () => { status.textContent = "live"; });
  source.addEventListener("ready", () => { status.textContent = "live"; });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
  source.addEventListener("refused", (message) => {
    status.textContent = JSON.parse(message.data).error;
    source.close();
  });
  source.addEventListener("message", (message) => {
    body.insertBefore(liveRow(JSON.parse(message.data)), body.firstChild);
    while (body.rows.length > MAX_LIVE_ROWS) body.deleteRow(body.rows.length - 1);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopy();
  setUpLive();
});
