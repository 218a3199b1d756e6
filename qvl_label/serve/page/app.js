// The page: posts each photo to /v1/label and renders its record. Text from the model is
// untrusted, so everything is written with textContent, never as HTML.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const keyInput = $("#apikey");
keyInput.value = localStorage.getItem("qvl-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("qvl-api-key", keyInput.value));

function headers() {
  return keyInput.value ? { "X-Api-Key": keyInput.value } : {};
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    const model = body.data[0];
    $("#model").textContent = `${model.engine.model} · ${model.engine.parallel} parallel · grammar ${model.engine.grammar}`;
    $("#lang").value = $("#lang").value || model.languages.join(",");
    const select = $("#channel");
    select.replaceChildren(...model.channels.map((name) => el("option", "", name)));
  } catch (error) {
    $("#model").textContent = `model info unavailable: ${error.message}`;
  }
}

// Text with the flagged spans marked; flags whose span no longer matches (a strict rewrite) are listed only.
function flagged(text, field, flags) {
  const span = el("span");
  const hits = flags
    .filter((f) => f.field === field && text.slice(f.span[0], f.span[1]) === f.text)
    .sort((a, b) => a.span[0] - b.span[0]);
  let at = 0;
  for (const flag of hits) {
    if (flag.span[0] < at) continue;
    span.append(text.slice(at, flag.span[0]));
    const mark = el("mark", "flag", flag.text);
    mark.title = `${flag.rule} (${flag.kind}): ${flag.suggestion}`;
    span.append(mark);
    at = flag.span[1];
  }
  span.append(text.slice(at));
  return span;
}

function section(parent, title) {
  parent.append(el("h3", "", title));
}

function renderLabel(content, record) {
  const label = record.label;
  const flags = (label.compliance && label.compliance.flags) || [];
  section(content, "Category");
  const category = el("div", "category", label.category.path.join(" › "));
  for (const [lang, names] of Object.entries(label.category.names || {})) {
    category.append(el("span", "names", `${lang}: ${names.join(" › ")}`));
  }
  content.append(category);

  section(content, "Attributes");
  const chips = el("div", "chips");
  for (const [name, values] of Object.entries(label.attributes)) {
    for (const item of values) {
      const chip = el("span", item.value ? "chip" : "chip unknown");
      chip.append(el("span", "raw", `${name}: `), el("b", "", item.value || "?"));
      if (item.raw && item.raw !== item.value) chip.append(el("span", "raw", ` (${item.raw})`));
      chips.append(chip);
    }
  }
  if (!chips.childElementCount) chips.append(el("span", "muted", "none seen"));
  content.append(chips);
  if (label.brand) content.append(el("p", "", `Brand: ${label.brand}`));

  for (const [lang, copy] of Object.entries(label.copy)) {
    section(content, `Copy · ${lang}`);
    const block = el("div", "lang");
    block.lang = lang;
    const title = el("div", "title");
    title.append(flagged(copy.title, `copy.${lang}.title`, flags));
    const description = el("p");
    description.append(flagged(copy.description, `copy.${lang}.description`, flags));
    const points = el("ul");
    copy.selling_points.forEach((point, i) => {
      const item = el("li");
      item.append(flagged(point, `copy.${lang}.selling_points[${i}]`, flags));
      points.append(item);
    });
    block.append(title, description, points);
    if (copy.tags.length) block.append(el("div", "muted", `tags: ${copy.tags.join(", ")}`));
    content.append(block);
  }

  if (label.visible_text.length) {
    section(content, "Visible text");
    const list = el("ul");
    label.visible_text.forEach((line) => list.append(el("li", "", line)));
    content.append(list);
  }
  if (flags.length) {
    section(content, `Compliance flags (${flags.length})`);
    const list = el("ul", "flags");
    flags.forEach((f) => list.append(el("li", "", `${f.field}: “${f.text}” — ${f.rule}, ${f.action}; ${f.suggestion}`)));
    content.append(list);
  }
  if (label.warnings && label.warnings.length) {
    section(content, "Warnings");
    const list = el("ul");
    label.warnings.forEach((w) => list.append(el("li", "muted", w)));
    content.append(list);
  }
}

function renderTimings(content, record) {
  const t = record.timings_ms;
  const tokens = record.tokens;
  const source = record.duplicate_of && record.duplicate_of.path;  // null when another request made it
  let text = !record.duplicate_of ? "" : source ? `reused the label of ${source}` : "reused an earlier label of the same photo";
  if (t) text = `encode ${t.encode_ms} ms · prefill ${t.prefill_ms} ms · decode ${t.decode_ms} ms · total ${t.total_ms} ms`;
  if (tokens) text += ` · ${tokens.completion} tokens (${tokens.forced} forced)`;
  if (text) content.append(el("p", "timings", text));
}

function render(card, record) {
  const status = $(".status", card);
  status.textContent = record.status;
  status.className = `status ${record.status === "ok" ? "ok" : "bad"}`;
  const content = $(".content", card);
  content.replaceChildren();
  if (record.status === "ok" && record.label) renderLabel(content, record);
  else if (record.status === "ok" && record.answer) content.append(el("p", "", record.answer));
  else {
    content.append(el("p", "error", record.error || `the model's answer was ${record.status}`));
    if (record.raw_output) content.append(el("pre", "raw", record.raw_output));
  }
  renderTimings(content, record);
  const button = $(".copy", card);
  button.disabled = false;
  button.onclick = async () => {
    const json = JSON.stringify(record, null, 2);
    try {
      await navigator.clipboard.writeText(json);
    } catch {
      const area = el("textarea");
      area.value = json;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy JSON"), 1500);
  };
}

async function label(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = file.name;
  $(".thumb", card).src = URL.createObjectURL(file);
  $("#results").prepend(card);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("lang", $("#lang").value);
  form.append("channel", $("#channel").value);
  form.append("strict", $("#strict").checked ? "true" : "false");
  try {
    const response = await fetch("/v1/label", { method: "POST", body: form, headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    render(card, body.records[0]);
  } catch (error) {
    const status = $(".status", card);
    status.textContent = "failed";
    status.className = "status bad";
    $(".content", card).replaceChildren(el("p", "error", error.message));
  }
}

function take(files) {
  for (const file of files) label(file);
}

const drop = $("#drop");
$("#files").addEventListener("change", (event) => take(event.target.files));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  take(event.dataTransfer.files);
});
loadModel();
