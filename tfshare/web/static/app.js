// tfshare web inbox: filters and the live feed. No framework, no innerHTML: every string that
// reaches the page came from another agency and is inserted as text (textContent) only.
"use strict";

(function () {
  var HIDDEN = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/gu;
  var HEX_ID = /^[0-9a-f]{1,64}$/;
  var TLP_CLASSES = {
    "RED": "tlp-red", "AMBER+STRICT": "tlp-amber-strict", "AMBER": "tlp-amber",
    "GREEN": "tlp-green", "CLEAR": "tlp-clear"
  };
  var SEVERITIES = ["low", "medium", "high", "critical"];

  // The same rule as tfshare.visible.escape: a character that moves, hides or reorders text is
  // shown as its escape.
  function visible(text) {
    return String(text).replace(HIDDEN, function (ch) {
      var code = ch.codePointAt(0);
      if (code <= 0xff) { return "\\x" + code.toString(16).padStart(2, "0"); }
      if (code <= 0xffff) { return "\\u" + code.toString(16).padStart(4, "0"); }
      return "\\U" + code.toString(16).padStart(8, "0");
    });
  }

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    td.textContent = visible(text);
    return td;
  }

  function byId(id) { return document.getElementById(id); }

  function filters() {
    return {
      channel: byId("f-channel").value,
      severity: byId("f-severity").value,
      tlp: byId("f-tlp").value,
      sender: byId("f-sender").value,
      since: byId("f-since").value,
      text: byId("f-text").value.trim().toLowerCase()
    };
  }

  function matches(tr, f) {
    var d = tr.dataset;
    if (f.channel && d.channel !== f.channel) { return false; }
    if (f.severity === "high+") {
      if (d.severity !== "high" && d.severity !== "critical") { return false; }
    } else if (f.severity && d.severity !== f.severity) { return false; }
    if (f.tlp && d.tlp !== f.tlp) { return false; }
    if (f.sender && d.sender !== f.sender) { return false; }
    if (f.since) {
      var received = Number(d.receivedMs || 0);
      if (!(received >= Date.now() - Number(f.since))) { return false; }
    }
    if (f.text && (d.text || "").indexOf(f.text) < 0) { return false; }
    return true;
  }

  function applyFilters() {
    var f = filters();
    var shown = 0;
    var rows = byId("inbox-rows").querySelectorAll("tr.msg");
    for (var i = 0; i < rows.length; i++) {
      var ok = matches(rows[i], f);
      rows[i].classList.toggle("hidden", !ok);
      if (ok) { shown++; }
    }
    byId("shown-count").textContent = String(shown);
  }

  function ensureOption(select, value) {
    if (!value) { return; }
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === value) { return; }
    }
    var option = document.createElement("option");
    option.value = value;  // already visible()
    option.textContent = value;
    select.appendChild(option);
  }

  function buildRow(row) {
    var str = function (v) { return typeof v === "string" ? v : ""; };
    var severity = SEVERITIES.indexOf(row.severity) >= 0 ? row.severity : "";
    var tlp = Object.prototype.hasOwnProperty.call(TLP_CLASSES, row.tlp) ? row.tlp : "";
    var tr = document.createElement("tr");
    tr.className = "msg";
    if (severity) { tr.classList.add("sev-" + severity); }
    if (row.unreadable) { tr.classList.add("unreadable"); }
    tr.dataset.msgId = str(row.msg_id);
    tr.dataset.channel = visible(str(row.channel));
    tr.dataset.severity = severity;
    tr.dataset.tlp = tlp;
    tr.dataset.sender = visible(str(row.sender));
    tr.dataset.receivedMs = String(Number(row.received_ms) || Date.now());
    tr.dataset.text = visible([str(row.title), str(row.sender), str(row.schema), str(row.channel)]
      .join(" ")).toLowerCase();
    tr.appendChild(cell(str(row.received), "when"));
    tr.appendChild(cell(str(row.sender), "sender"));
    tr.appendChild(cell(str(row.channel), "channel"));
    tr.appendChild(cell(severity, "severity"));
    var tlpCell = document.createElement("td");
    if (tlp) {
      var badge = document.createElement("span");
      badge.className = "tlp " + TLP_CLASSES[tlp];
      badge.textContent = "TLP:" + tlp;
      tlpCell.appendChild(badge);
    }
    tr.appendChild(tlpCell);
    var titleCell = document.createElement("td");
    titleCell.className = "title";
    if (row.warning) {
      var warning = document.createElement("span");
      warning.className = "warning";
      warning.textContent = visible(str(row.warning));
      titleCell.appendChild(warning);
      titleCell.appendChild(document.createTextNode(" "));
    }
    var title = visible(str(row.title)) || "(no title)";
    var msgId = str(row.msg_id);
    if (HEX_ID.test(msgId)) {
      var a = document.createElement("a");
      a.href = "/message/" + msgId;  // hex digits only: nothing from the message but its id
      a.textContent = title;
      titleCell.appendChild(a);
    } else {
      titleCell.appendChild(document.createTextNode(title));
    }
    tr.appendChild(titleCell);
    return tr;
  }

  var baseTitle = document.title;
  var unseenLoud = 0;

  // One audio context for the page (a new one per alert costs the browser tens of
  // milliseconds each: a burst of critical alerts was shown up to a second late), and one
  // beep per second at most: a burst sounds once.
  var audio = null;
  var lastBeep = 0;

  function beep() {
    var now = Date.now();
    if (now - lastBeep < 1000) { return; }
    lastBeep = now;
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) { return; }
      if (!audio) { audio = new Ctx(); }
      if (audio.state === "suspended") { audio.resume().catch(function () {}); }
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.08;
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.18);
    } catch (e) { /* no sound: the visual cue remains */ }
  }

  function cue(rows) {
    unseenLoud += rows.length;
    document.title = "(" + unseenLoud + ") " + baseTitle;
    document.body.classList.add("alarm");
    for (var i = 0; i < rows.length; i++) { rows[i].classList.add("loud"); }
    beep();
  }

  function seen() {
    unseenLoud = 0;
    document.title = baseTitle;
    document.body.classList.remove("alarm");
  }

  // The rows listed, by msg_id and sender: a pushed row the page already lists (it was
  // loaded after the message arrived) is not added twice. A set, not a scan of the table:
  // each pushed row must cost the same whatever the size of the inbox.
  var listed = null;

  function listedKeys() {
    if (listed === null) {
      listed = new Set();
      var rows = byId("inbox-rows").querySelectorAll("tr.msg");
      for (var i = 0; i < rows.length; i++) {
        listed.add(rows[i].dataset.msgId + " " + rows[i].dataset.sender);
      }
    }
    return listed;
  }

  // Rows pushed while a frame is awaited. The first row since the last frame goes on the
  // page at once (a steady feed is never held back); the rest of a burst (a hundred alerts
  // in a second) waits for that frame and goes in together - one layout, one title update,
  // one cue - instead of one layout per row, which made the last rows of a burst wait for
  // all the others. In a hidden tab frames do not come: each row goes in at once (the title
  // counter is what is seen there).
  var pending = [];
  var frameAsked = false;

  function onMessage(event) {
    var row;
    try { row = JSON.parse(event.data); } catch (e) { return; }
    if (!row || typeof row !== "object") { return; }
    var key = String(row.msg_id) + " " + visible(String(row.sender));
    if (listedKeys().has(key)) { return; }
    listed.add(key);
    pending.push(buildRow(row));
    if (document.hidden) {
      putPending();
    } else if (!frameAsked) {
      putPending();
      frameAsked = true;
      window.requestAnimationFrame(function () {
        frameAsked = false;
        putPending();
      });
    }
  }

  function putPending() {
    var rows = pending;
    pending = [];
    if (!rows.length) { return; }
    var tbody = byId("inbox-rows");
    var f = filters();
    var fragment = document.createDocumentFragment();
    var loud = [];
    var shown = 0;
    var now = String(Date.now());
    for (var i = rows.length - 1; i >= 0; i--) {  // newest first, as the table lists them
      var tr = rows[i];
      tr.dataset.shownMs = now;  // with data-received-ms: the stored-to-shown delay
      tr.classList.add("fresh");
      ensureOption(byId("f-channel"), tr.dataset.channel);
      ensureOption(byId("f-sender"), tr.dataset.sender);
      var ok = matches(tr, f);  // only the new rows are judged: the others have not changed
      tr.classList.toggle("hidden", !ok);
      if (ok) {
        shown++;
        if (tr.dataset.severity === "high" || tr.dataset.severity === "critical") { loud.push(tr); }
      }
      fragment.appendChild(tr);
    }
    tbody.insertBefore(fragment, tbody.firstChild);
    var empty = byId("empty-note");
    if (empty) { empty.remove(); }
    if (shown) {
      var count = byId("shown-count");
      count.textContent = String((Number(count.textContent) || 0) + shown);
    }
    if (loud.length) { cue(loud); }
  }

  function startInbox() {
    var form = byId("filters");
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    form.addEventListener("input", applyFilters);
    form.addEventListener("change", applyFilters);
    applyFilters();
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") { seen(); }
    });
    document.addEventListener("click", seen);
    var state = byId("live-state");
    var source = new EventSource("/events");
    source.addEventListener("open", function () { state.dataset.state = "live"; state.textContent = "live"; });
    source.addEventListener("error", function () { state.dataset.state = "lost"; state.textContent = "reconnecting"; });
    source.addEventListener("message", onMessage);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (byId("inbox-rows")) { startInbox(); }
  });
})();
