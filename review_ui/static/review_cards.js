// The review cards: one card in focus, keys to decide, and only the cards whose data changed are redrawn.
//
// Python (review_ui/review_flow.py) sends {epoch, cards, families, reasons, ...}; every user action goes into an
// outbox that is sent whole (setStateValue) until Python acknowledges it (data.acked): two quick decisions
// can never overwrite each other on their way to the server. All user text is set with textContent, never as
// HTML.

const KEYS_HELP = "J/K or ↓/↑ move · A approve · X reject · 1–6 reason · E edit · F approve family · U or ⌫ undo · S select";
const STATUS_WORD = { approve: "approved", reject: "rejected", edit: "edited", undo: "vote withdrawn" };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function labelBadges(labels, cls) {
  const box = el("span", cls || "rv-labels");
  for (const [task, label] of labels) {
    const badge = el("span", "rv-label");
    badge.appendChild(el("span", "rv-label-task", task));
    badge.appendChild(el("span", "rv-label-value", label));
    box.appendChild(badge);
  }
  return box;
}

function diffNode(segments) {
  const box = el("div", "rv-text");
  for (const [op, text] of segments) {
    if (op === "ins") box.appendChild(el("ins", "rv-ins", text));
    else if (op === "del") box.appendChild(el("del", "rv-del", text));
    else box.appendChild(document.createTextNode(text));
  }
  return box;
}

// A textarea reads every line break as "\n" (a stored "\r\n" or lone "\r" comes back as "\n"): texts compared
// with their line breaks made alike, so that saving a text unchanged approves it instead of storing an edit.
export function sameText(a, b) {
  const lines = (t) => String(t).replace(/\r\n?/g, "\n");
  return lines(a) === lines(b);
}

// What saving the editor does: approve a text left as it was, store an edit of a changed one (as typed), or
// nothing for an empty one (null).
export function savedAs(card, typed) {
  if (!typed.trim()) return null;
  return sameText(typed, card.text) ? { op: "approve" } : { op: "edit", text: typed };
}

function signature(card, extra) {
  return JSON.stringify([card, extra]);
}

export default function (component) {
  const { parentElement, setStateValue } = component;
  const data = typeof component.data === "string" ? JSON.parse(component.data) : component.data;
  let s = parentElement.__review;
  if (!s) {
    s = parentElement.__review = {
      epoch: null,
      focus: null,
      reasons: {},      // card id -> chosen reason key
      selected: new Set(),
      editing: null,    // card id being edited
      saving: {},       // card id -> op sent, waiting for the server
      outbox: [],
      seq: 0,
      nodes: {},        // card id -> {node, sig}
      familyNodes: {},
      noticeSeq: null,
      focusSeq: null,
      refusedSeq: null,
      drafts: {},       // card id -> {text, version}: typed in an edit the server refused, or in an editor another
                        // one closed; the editor reopens with it while the card is at that version
      cards: [],
    };
    const root = el("div", "rv-root");
    root.setAttribute("data-testid", "review-cards");
    s.bar = el("div", "rv-bar");
    s.help = el("div", "rv-help", KEYS_HELP);
    s.notice = el("div", "rv-notice");
    s.notice.setAttribute("role", "status");
    s.selection = el("div", "rv-selection");
    s.list = el("div", "rv-list");
    s.bar.append(s.notice, s.selection, s.help);
    root.append(s.bar, s.list);
    parentElement.appendChild(root);
    // keep the bar (messages, keys) in view below Streamlit's own fixed header
    const header = document.querySelector('header[data-testid="stHeader"]');
    s.bar.style.top = (header ? header.getBoundingClientRect().height : 0) + "px";
    s.root = root;
    s.onKey = (event) => onKey(s, event);
    document.addEventListener("keydown", s.onKey);
  }
  s.setStateValue = setStateValue;
  s.data = data;
  render(s, data);
  return () => {
    document.removeEventListener("keydown", s.onKey);
    delete parentElement.__review;
  };
}

// Sending -----------------------------------------------------------------------------------------------

function send(s, action) {
  s.seq = Math.max(s.seq + 1, Date.now() * 1000);
  action.seq = s.seq;
  action.sent_at = performance.now();
  const acked = (s.data && s.data.acked) || 0;
  s.outbox = s.outbox.filter((a) => a.seq > acked);
  s.outbox.push(action);
  s.setStateValue("outbox", s.outbox.map(({ sent_at, ...rest }) => rest));
  return action.seq;
}

function markSaving(s, ids, op, seq) {
  for (const id of ids) s.saving[id] = { op, seq };
}

// A decided card can be decided again (with one review "the latest decision wins"; with k, another vote), but
// not to what it already is; an edit is for pending cards.
function decidable(card, op) {
  if (op === "approve") return card.status !== "approved";
  if (op === "reject") return card.status !== "rejected";
  return card.status === "pending";
}

function decide(s, op, card, extra) {
  if (!card || s.saving[card.id] || !decidable(card, op)) return;
  const seq = send(s, { op, id: card.id, version: card.version, ...(extra || {}) });
  markSaving(s, [card.id], op, seq);
  paintCard(s, card);
  if (op !== "undo") moveFocus(s, 1, true);
}

// Keys --------------------------------------------------------------------------------------------------

function typing(event) {
  const t = event.target;
  if (!t || !t.tagName) return false;
  return t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName);
}

function onKey(s, event) {
  if (!s.root.isConnected || event.defaultPrevented) return;
  if (s.editing !== null) {
    if (event.key === "Escape") { event.preventDefault(); stopEditing(s, false); }
    else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); stopEditing(s, true); }
    return;
  }
  if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
  const card = current(s);
  const key = event.key;
  // A held key repeats its keydown every ~33 ms: moving the focus (and scrolling, Tab, …) may repeat, the
  // keys that act may not (a held A approved every card it ran over, each in view for 33 ms: one per press).
  if (event.repeat && (/^[aAxXeEfFuUsS1-9]$/.test(key) || key === "Backspace")) {
    event.preventDefault();
    return;
  }
  let handled = true;
  if (key === "j" || key === "J" || key === "ArrowDown") moveFocus(s, 1, false);
  else if (key === "k" || key === "K" || key === "ArrowUp") moveFocus(s, -1, false);
  else if (key === "a" || key === "A") decide(s, "approve", card);
  else if (key === "x" || key === "X") decide(s, "reject", card, { reason: (card && s.reasons[card.id]) || "unspecified" });
  else if (key === "e" || key === "E") startEditing(s, card);
  else if (key === "f" || key === "F") approveFamily(s, card);
  else if (key === "u" || key === "U" || key === "Backspace") undo(s, null);
  else if (key === "s" || key === "S") toggleSelected(s, card);
  else if (/^[1-9]$/.test(key) && card) chooseReason(s, card, Number(key) - 1);
  else handled = false;
  if (handled) event.preventDefault();
}

function current(s) {
  return s.cards.find((c) => c.id === s.focus) || null;
}

function moveFocus(s, step, toPending) {
  const cards = s.cards;
  if (!cards.length) return;
  let i = cards.findIndex((c) => c.id === s.focus);
  if (i < 0) i = step > 0 ? -1 : cards.length;
  let j = i + step;
  if (toPending) {
    // the next card still to decide: below, else from the top (one left unsure earlier); none: stay
    const open = (k) => cards[k].status === "pending" && !s.saving[cards[k].id];
    while (j >= 0 && j < cards.length && !open(j)) j += step;
    if (j < 0 || j >= cards.length) {
      j = cards.findIndex((c, k) => open(k));
      if (j < 0) j = i;
    }
  }
  j = Math.max(0, Math.min(cards.length - 1, j));
  setFocus(s, cards[j].id, true);
}

function setFocus(s, id, scroll) {
  const before = s.focus;
  s.focus = id;
  for (const cid of [before, id]) {
    const entry = s.nodes[cid];
    if (entry) {
      entry.node.classList.toggle("rv-focused", cid === id);
      entry.node.setAttribute("data-focused", cid === id ? "true" : "false");
    }
  }
  s.root.setAttribute("data-focus", id === null ? "" : String(id));
  const entry = s.nodes[id];
  if (scroll && entry) entry.node.scrollIntoView({ block: "nearest" });
}

function chooseReason(s, card, index) {
  const reasons = s.data.reasons || [];
  if (index >= reasons.length) return;
  const key = reasons[index][0];
  s.reasons[card.id] = s.reasons[card.id] === key ? undefined : key;
  paintCard(s, card);
}

function toggleSelected(s, card) {
  if (!card || card.status !== "pending") return;
  if (s.selected.has(card.id)) s.selected.delete(card.id); else s.selected.add(card.id);
  paintCard(s, card);
  paintSelection(s);
}

function approveFamily(s, card) {
  if (!card || card.parent_id === null || !s.data.family_actions) return;
  const family = (s.data.families || {})[card.parent_id];
  if (!family || !family.pending) return;
  const ids = s.cards.filter((c) => c.parent_id === card.parent_id && c.status === "pending").map((c) => c.id);
  const seq = send(s, { op: "family", parent_id: card.parent_id, expected: family.pending, ids });
  markSaving(s, ids, "family", seq);
  for (const c of s.cards) if (ids.includes(c.id)) paintCard(s, c);
  const last = s.cards.filter((c) => ids.includes(c.id)).pop();
  if (last) { setFocus(s, last.id, false); moveFocus(s, 1, true); }
}

function undo(s, card) {
  const seq = send(s, card ? { op: "undo", id: card.id, version: card.version } : { op: "undo" });
  if (card) { markSaving(s, [card.id], "undo", seq); paintCard(s, card); }
}

function bulkSelected(s, decision) {
  const ids = [...s.selected];
  if (!ids.length) return;
  // the reason picked on each card goes with it (a rejection of the selection was stored "unspecified")
  const reasons = {};
  for (const id of ids) if (s.reasons[id]) reasons[id] = s.reasons[id];
  const seq = send(s, { op: "selected", decision, ids, reasons });
  markSaving(s, ids, decision, seq);
  s.selected.clear();
  for (const c of s.cards) if (ids.includes(c.id)) paintCard(s, c);
  paintSelection(s);
}

// Editing -----------------------------------------------------------------------------------------------

function startEditing(s, card) {
  if (!card || card.status !== "pending" || s.saving[card.id]) return;
  const before = s.cards.find((c) => c.id === s.editing && c.id !== card.id);
  if (before) {  // one editor at a time: the other closes, keeping what was typed for when it reopens
    const open = s.nodes[before.id] && s.nodes[before.id].node.querySelector("textarea");
    if (open && !sameText(open.value, before.text)) s.drafts[before.id] = { text: open.value, version: before.version };
  }
  s.editing = card.id;
  if (before) paintCard(s, before);
  paintCard(s, card);
  const entry = s.nodes[card.id];
  const box = entry && entry.node.querySelector("textarea");
  if (box) { box.focus(); box.setSelectionRange(box.value.length, box.value.length); }
}

function stopEditing(s, save) {
  const card = s.cards.find((c) => c.id === s.editing);
  const entry = card && s.nodes[card.id];
  const box = entry && entry.node.querySelector("textarea");
  const text = box ? box.value : "";
  if (save && card && box && !text.trim()) {
    // an empty text is no variant: the editor stays open and says so (it closed in silence, nothing saved)
    s.notice.textContent = "An empty text cannot be saved: write the variant's text, or press Esc to cancel.";
    s.notice.className = "rv-notice rv-notice-warning";
    box.focus();
    return;
  }
  s.editing = null;
  if (!card) return;
  const saved = save ? savedAs(card, text) : null;
  if (saved && saved.op === "edit") {
    decide(s, "edit", card, { text: saved.text });
  } else if (saved) {
    decide(s, "approve", card);
  } else {
    paintCard(s, card);
  }
}

function autosize(box) {
  box.style.height = "auto";
  box.style.height = Math.min(window.innerHeight * 0.7, box.scrollHeight + 4) + "px";
}

// Rendering ---------------------------------------------------------------------------------------------

function render(s, data) {
  if (data.notice && data.notice.seq !== s.noticeSeq) {
    s.noticeSeq = data.notice.seq;
    s.notice.textContent = data.notice.text;
    s.notice.className = "rv-notice rv-notice-" + data.notice.kind;
  }
  const acked = data.acked || 0;
  // Actions the server has answered: their cards are settled, whatever the answer was.
  for (const id of Object.keys(s.saving)) if (s.saving[id].seq <= acked) delete s.saving[id];
  s.outbox = s.outbox.filter((a) => a.seq > acked);
  const rebuild = data.epoch !== s.epoch;
  s.cards = data.cards;
  if (rebuild) {
    s.epoch = data.epoch;
    s.nodes = {};
    s.familyNodes = {};
    s.saving = {};
    s.reasons = {};
    s.selected.clear();
    s.editing = null;
    s.list.replaceChildren();
    s.focus = null;
    if (!data.cards.length) s.list.appendChild(el("div", "rv-empty", data.empty || "Nothing to review here."));
  }
  const seen = new Set();
  let previousFamily;
  let anchor = null; // the node after which the next card goes, to keep the server's order
  for (const card of data.cards) {
    seen.add(card.id);
    if (card.parent_id !== previousFamily) {
      previousFamily = card.parent_id;
      anchor = paintFamily(s, card.parent_id, anchor);
    }
    const node = paintCard(s, card);
    if (node.previousSibling !== anchor || node.parentNode !== s.list) {
      if (anchor) anchor.after(node); else s.list.prepend(node);
    }
    anchor = node;
  }
  for (const id of Object.keys(s.nodes)) {
    if (!seen.has(Number(id))) { s.nodes[id].node.remove(); delete s.nodes[id]; }
  }
  for (const key of Object.keys(s.familyNodes)) {
    if (!data.cards.some((c) => String(c.parent_id) === key)) { s.familyNodes[key].node.remove(); delete s.familyNodes[key]; }
  }
  paintSelection(s);
  if (data.refused_edit && data.refused_edit.seq !== s.refusedSeq) {
    s.refusedSeq = data.refused_edit.seq;
    const card = data.cards.find((c) => c.id === data.refused_edit.id);
    if (card && card.status === "pending") {
      s.drafts[card.id] = { text: data.refused_edit.text, version: data.refused_edit.version };
      setFocus(s, card.id, true);
      startEditing(s, card);
    }
  }
  if (data.focus_request && data.focus_request.seq !== s.focusSeq) {
    s.focusSeq = data.focus_request.seq;
    if (s.nodes[data.focus_request.id]) setFocus(s, data.focus_request.id, true);
  }
  if (s.focus === null || !s.nodes[s.focus]) {
    const first = data.cards.find((c) => c.status === "pending") || data.cards[0];
    if (first) setFocus(s, first.id, false);
  } else {
    setFocus(s, s.focus, false);
  }
}

function paintFamily(s, parentId, anchor) {
  const key = String(parentId);
  const family = (s.data.families || {})[key];
  const sig = signature(family || null, s.data.family_actions);
  let entry = s.familyNodes[key];
  if (!entry || entry.sig !== sig) {
    const node = el("div", "rv-family");
    node.setAttribute("data-family", key);
    if (family) {
      const head = el("div", "rv-family-head");
      head.appendChild(el("span", "rv-source-id", "Source #" + family.id + " · " + family.split));
      head.appendChild(labelBadges(family.labels, "rv-labels rv-labels-source"));
      if (s.data.family_actions && family.pending) {
        const button = el("button", "rv-btn rv-btn-family", "Approve family (" + family.pending + " pending) · F");
        button.setAttribute("data-action", "family");
        button.onclick = () => {
          const card = s.cards.find((c) => String(c.parent_id) === key && c.status === "pending");
          if (card) { setFocus(s, card.id, false); approveFamily(s, card); }
        };
        head.appendChild(button);
      }
      node.appendChild(head);
      node.appendChild(el("div", "rv-source", family.text));
    } else {
      node.appendChild(el("div", "rv-family-head", "Variants without a source text"));
    }
    if (entry) entry.node.replaceWith(node);
    entry = s.familyNodes[key] = { node, sig };
  }
  const node = entry.node;
  if (node.parentNode !== s.list || node.previousSibling !== anchor) {
    if (anchor) anchor.after(node); else s.list.prepend(node);
  }
  return node;
}

function statusLine(card) {
  const review = card.last_review;
  const line = el("div", "rv-status rv-status-" + card.status);
  if (!review || review.decision === "undo") {
    let text = card.status === "pending" ? "pending" : card.status;
    if (review && review.decision === "undo") text += " · " + review.user + " withdrew their vote";
    line.textContent = text;
  } else {
    let word = STATUS_WORD[review.decision] || review.decision;
    if (review.decision === "edit" && card.status === "approved") word = "edited and approved";
    let text = (review.decision === "reject" ? "✗ " : "✓ ") + word + " by " + review.user;
    if (review.decision === "reject") text += " · reason: " + (review.reason_label || review.reason);
    // an edited text trains once someone other than its writer approves it
    if (card.status === "pending") text += review.decision === "edit" || card.awaiting_other ? " · waiting for another member's approval" : " · waiting for more reviews";
    line.textContent = text;
  }
  line.setAttribute("data-status", card.status);
  if (card.votes_text) line.appendChild(el("span", "rv-votes", " · " + card.votes_text));
  return line;
}

function paintCard(s, card) {
  const reasons = s.data.reasons || [];
  const saving = s.saving[card.id] ? s.saving[card.id].op : null;
  const extra = [saving, s.reasons[card.id] || null, s.selected.has(card.id), s.editing === card.id];
  const sig = signature(card, extra);
  const entry = s.nodes[card.id];
  if (entry && entry.sig === sig) return entry.node; // unchanged: not redrawn
  const node = el("div", "rv-card");
  node.id = "rv-card-" + card.id;
  node.setAttribute("data-id", String(card.id));
  node.setAttribute("data-status", card.status);
  node.setAttribute("data-version", String(card.version));
  node.setAttribute("data-focused", s.focus === card.id ? "true" : "false");
  if (s.focus === card.id) node.classList.add("rv-focused");
  if (saving) { node.classList.add("rv-saving"); node.setAttribute("data-saving", saving); }
  if (card.status !== "pending") node.classList.add("rv-decided");
  node.onclick = (event) => { if (!event.target.closest("button,textarea,input")) setFocus(s, card.id, false); };

  const head = el("div", "rv-card-head");
  const pick = el("input", "rv-pick");
  pick.type = "checkbox";
  pick.title = "Select (S)";
  pick.checked = s.selected.has(card.id);
  pick.disabled = card.status !== "pending";
  pick.onchange = () => toggleSelected(s, card);
  head.append(pick, el("span", "rv-card-id", "#" + card.id), el("span", "rv-provenance", card.provenance));
  // a card with no source above it (a submitted text) carries its own labels, drawn as a family header's are
  if (card.labels && card.labels.length) head.appendChild(labelBadges(card.labels, "rv-labels rv-labels-source"));
  node.appendChild(head);

  if (s.editing === card.id) {
    const box = el("textarea", "rv-edit");
    // a draft typed over an older version is dropped: a colleague's edit since would be written over unseen
    const draft = s.drafts[card.id];
    box.value = draft !== undefined && draft.version === card.version ? draft.text : card.text;
    delete s.drafts[card.id];
    box.setAttribute("aria-label", "Edited text");
    box.oninput = () => autosize(box);
    node.appendChild(box);
    requestAnimationFrame(() => autosize(box));
    const row = el("div", "rv-actions");
    const save = el("button", "rv-btn rv-btn-primary", "Save and approve · Ctrl+Enter");
    save.setAttribute("data-action", "save");
    save.onclick = () => stopEditing(s, true);
    const cancel = el("button", "rv-btn", "Cancel · Esc");
    cancel.onclick = () => stopEditing(s, false);
    row.append(save, cancel);
    node.appendChild(row);
  } else {
    node.appendChild(diffNode(card.segments));
    if (card.diff_note) node.appendChild(el("div", "rv-small", card.diff_note));
  }
  if (card.edited_from) node.appendChild(el("div", "rv-small", "edited; the augmenter wrote: " + card.edited_from));
  if (card.label_model) {
    const lm = el("div", "rv-model" + (card.label_model.disagrees ? " rv-model-flag" : ""));
    lm.appendChild(el("span", "rv-model-who", card.label_model.who + ": "));
    for (const [task, predicted, intended, p, note, flagged] of card.label_model.tasks) {
      const ok = predicted === intended;
      const item = el("span", flagged ? "rv-pred rv-pred-off" : "rv-pred");
      item.textContent = task + " " + predicted + " (" + p + ")" + (ok ? "" : " ≠ " + intended) + (note ? " · " + note : "");
      lm.appendChild(item);
    }
    node.appendChild(lm);
  }
  node.appendChild(statusLine(card));

  if (s.editing !== card.id) {
    const row = el("div", "rv-actions");
    const pending = card.status === "pending" && !saving;
    const approve = el("button", "rv-btn rv-btn-primary", "Approve · A");
    approve.setAttribute("data-action", "approve");
    approve.disabled = saving || !decidable(card, "approve");
    approve.onclick = () => { setFocus(s, card.id, false); decide(s, "approve", card); };
    const reject = el("button", "rv-btn", "Reject · X");
    reject.setAttribute("data-action", "reject");
    reject.disabled = saving || !decidable(card, "reject");
    reject.onclick = () => { setFocus(s, card.id, false); decide(s, "reject", card, { reason: s.reasons[card.id] || "unspecified" }); };
    const edit = el("button", "rv-btn", "Edit · E");
    edit.setAttribute("data-action", "edit");
    edit.disabled = !pending;
    edit.onclick = () => { setFocus(s, card.id, false); startEditing(s, card); };
    row.append(approve, reject, edit);
    if (card.undoable && !saving) {
      const back = el("button", "rv-btn", "Undo · U");
      back.setAttribute("data-action", "undo");
      back.onclick = () => { setFocus(s, card.id, false); undo(s, card); };
      row.appendChild(back);
    }
    if (saving) row.appendChild(el("span", "rv-saving-note", "saving…"));
    node.appendChild(row);
    if (decidable(card, "reject")) {  // an approved card on its view may be rejected too: with a visible reason
      const chips = el("div", "rv-reasons");
      chips.appendChild(el("span", "rv-reasons-title", "Reason:"));
      reasons.forEach(([key, label], i) => {
        const chip = el("button", "rv-chip" + (s.reasons[card.id] === key ? " rv-chip-on" : ""), (i + 1) + " " + label);
        chip.setAttribute("data-reason", key);
        chip.setAttribute("aria-pressed", s.reasons[card.id] === key ? "true" : "false");
        chip.onclick = () => { setFocus(s, card.id, false); chooseReason(s, card, i); };
        chips.appendChild(chip);
      });
      if (!s.reasons[card.id]) chips.appendChild(el("span", "rv-small", "none chosen: X stores “unspecified”"));
      node.appendChild(chips);
    }
  }
  if (entry) entry.node.replaceWith(node);
  s.nodes[card.id] = { node, sig };
  return node;
}

function paintSelection(s) {
  s.selection.replaceChildren();
  if (!s.selected.size) return;
  s.selection.appendChild(el("span", "rv-small", s.selected.size + " selected"));
  const ok = el("button", "rv-btn rv-btn-primary", "Approve selected (" + s.selected.size + ")");
  ok.setAttribute("data-action", "approve-selected");
  ok.onclick = () => bulkSelected(s, "approve");
  const no = el("button", "rv-btn", "Reject selected (" + s.selected.size + ")");
  no.setAttribute("data-action", "reject-selected");
  no.onclick = () => bulkSelected(s, "reject");
  s.selection.append(ok, no);
}
