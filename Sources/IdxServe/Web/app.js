// The map page: a search box with results as you type, beside the map of every document.
import * as api from "./api.js";
import { MapView, genreColour } from "./map.js";

const $ = (id) => document.getElementById(id);
const state = { data: null, rowById: new Map(), documents: new Map(), searchController: null, searchTimer: 0, hoverTimer: 0 };

const map = new MapView($("map"), { onHover: showCard, onClick: select });
window.idxMap = map; // what the page reports (points drawn, frame time), for tests and curious people

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

/** A coloured dot (its colour set through the CSSOM: the page's CSP allows no inline style). */
function swatch(colour) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.background = colour;
  return span;
}

function escapeText(text) {
  const span = document.createElement("span");
  span.textContent = text ?? "";
  return span.innerHTML;
}

/** A document's fields (cached): title, year, genre, description. */
async function documentOf(row) {
  const id = state.data.ids[row];
  if (!state.documents.has(id)) state.documents.set(id, api.documentById(id));
  return state.documents.get(id);
}

function rowOf(hit) {
  return state.rowById.get(hit.id) ?? -1;
}

// Hover card --------------------------------------------------------------------------------

function showCard(row, left, top) {
  clearTimeout(state.hoverTimer);
  const card = $("card");
  if (row < 0) { card.hidden = true; return; }
  state.hoverTimer = setTimeout(async () => {
    try {
      const d = await documentOf(row);
      if (map.hovered !== row) return;
      const year = d.year == null ? "" : ` (${d.year})`;
      card.innerHTML = `<div class="title">${escapeText(d.title)}${escapeText(year)}</div>`
        + `<div class="meta">${escapeText(d.genre)} · id ${escapeText(String(d.id))}</div>`
        + `<div class="description">${escapeText(d.description)}</div>`;
      const stage = $("stage").getBoundingClientRect();
      card.style.left = `${Math.min(left + 14, stage.width - 350)}px`;
      card.style.top = `${Math.min(top + 14, stage.height - 160)}px`;
      card.hidden = false;
    } catch (error) {
      setStatus(`hover: ${error.message}`, true);
    }
  }, 40);
}

// Results and neighbours --------------------------------------------------------------------

function hitItem(hit, onClick) {
  const li = document.createElement("li");
  li.className = "hit";
  const row = rowOf(hit);
  const colour = row >= 0 ? genreColour(state.data.genre[row]) : "#999";
  const year = hit.year == null ? "" : ` (${hit.year})`;
  li.innerHTML = `<b>${escapeText(hit.title)}</b>${escapeText(year)}`
    + `<div class="meta">${escapeText(hit.genre)} · score ${hit.score.toFixed(3)}</div>`;
  li.prepend(swatch(colour));
  li.addEventListener("mouseenter", () => { map.hovered = row; map.redrawMarks(); });
  li.addEventListener("mouseleave", () => { map.hovered = -1; map.redrawMarks(); });
  li.addEventListener("click", () => onClick(row));
  return li;
}

async function select(row) {
  if (row < 0) return;
  map.selected = row;
  map.redrawMarks();
  const id = state.data.ids[row];
  try {
    const [d, answer] = await Promise.all([documentOf(row), api.neighbours(id, 10)]);
    $("neighbours").hidden = false;
    $("neighbours-title").textContent = `More like “${d.title}”`;
    const list = $("neighbour-list");
    list.replaceChildren(...answer.neighbours.map((hit) => hitItem(hit, (r) => { map.centreOn(r); select(r); })));
    map.related = answer.neighbours.map(rowOf).filter((r) => r >= 0);
    map.redrawMarks();
  } catch (error) {
    setStatus(`neighbours: ${error.message}`, true);
  }
}

async function runSearch() {
  const q = $("query").value.trim();
  state.searchController?.abort();
  if (!q) {
    $("results").replaceChildren();
    $("search-info").textContent = "";
    map.highlighted = [];
    map.redrawMarks();
    return;
  }
  const controller = new AbortController();
  state.searchController = controller;
  const t0 = performance.now();
  try {
    const hits = await api.search(q, 20, controller.signal);
    const ms = performance.now() - t0;
    $("search-info").textContent = `${hits.length} results in ${ms.toFixed(0)} ms`;
    $("search-info").classList.remove("error");
    $("results").replaceChildren(...hits.map((hit) => hitItem(hit, (row) => { map.centreOn(row); select(row); })));
    map.highlighted = hits.map(rowOf).filter((r) => r >= 0);
    map.redrawMarks();
  } catch (error) {
    if (error.name === "AbortError") return;
    $("search-info").textContent = error.message;
    $("search-info").classList.add("error");
    $("results").replaceChildren();
    map.highlighted = [];
    map.redrawMarks();
  }
}

// Legend ------------------------------------------------------------------------------------

function buildLegend() {
  const counts = new Array(state.data.genres.length).fill(0);
  for (const g of state.data.genre) counts[g]++;
  const items = state.data.genres.map((name, g) => ({ name, g, count: counts[g] }))
    .sort((a, b) => b.count - a.count);
  $("legend").replaceChildren(...items.map(({ name, g, count }) => {
    const li = document.createElement("li");
    li.innerHTML = `${escapeText(name || "(none)")} <span class="count">${count.toLocaleString("en")}</span>`;
    li.prepend(swatch(genreColour(g)));
    li.dataset.genre = name;
    li.addEventListener("click", () => {
      if (map.hidden.has(g)) map.hidden.delete(g); else map.hidden.add(g);
      li.classList.toggle("off", map.hidden.has(g));
      map.draw(true);
    });
    return li;
  }));
}

// Start -------------------------------------------------------------------------------------

async function start() {
  try {
    const [health, data] = await Promise.all([api.health(), api.map()]);
    state.data = data;
    for (let row = data.count - 1; row >= 0; row--) state.rowById.set(data.ids[row], row);
    buildLegend();
    map.setData(data);
    setStatus(`${data.count.toLocaleString("en")} documents · ${health.generation} · map: ${data.method} (${data.source})`);
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus(`could not load the map: ${error.message}`, true);
  }
}

$("query").addEventListener("input", () => {
  clearTimeout(state.searchTimer);
  state.searchTimer = setTimeout(runSearch, 120);
});

start();
