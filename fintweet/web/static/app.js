// fintweet live page: the feed from /v1/tweets then /v1/stream (EventSource), the counters from
// /v1/stats, top tickers from /v1/tickers, a per-minute series from /v1/series (plain SVG) and a
// classify box posting to /v1/classify. No framework, no build step, nothing from the network
// but this server.

const FEED_MAX = 60;
const REFRESH_MS = 5000;
// The page's time ranges: each with the series' step, sized to stay near a hundred bars, and
// how often the stream's refreshes may read the range again. A day is ~4,000 Redis reads
// (24 times an hour's) and moves little in a few seconds, so its tickers and series are read
// at most every 30 s; the totals follow every batch. (The per-minute buckets hold 7 days, but a
// week summed minute by minute is half a second of Redis per refresh: the page stops at a day.)
const WINDOWS = {
  "1h": { name: "last hour", window: "1h", minutes: 60, step: "1m", per: "per minute", rereadMs: 0 },
  "1d": { name: "last day", window: "1d", minutes: 1440, step: "15m", per: "per 15 minutes",
          rereadMs: 30000 },
};
let windowRead = { range: null, at: 0, tickers: null };  // the range's last read, for rereadMs
const SENTIMENTS = ["Bullish", "Neutral", "Bearish"];
const $ = (id) => document.getElementById(id);

let apiKey = sessionStorage.getItem("fintweet-key") || "";
let stream = null;
let refreshTimer = null;
let quietTimer = null;  // the one interval refresh of start(), however often start() runs
let reconnectTimer = null;
let reconnectDelay = 2000;
let feedReloadTimer = null;
// The latest loadFeed(): { arrived } collects the stream's results while its page is fetched.
// Only that load's answer is shown, so a slow answer to an earlier filter cannot replace it.
let feedLoad = null;
let feedFailed = false;  // the latest load failed (Redis down): reload once the API answers
let feedError = null;  // and why, which an empty feed says until a load succeeds
const RECONNECT_MAX_MS = 30000;
let lastSeries = null;

// --- API ------------------------------------------------------------------------------------

class NeedKey extends Error {}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {  // no answer at all (the server is down or unreachable): fetch's own words say less
    throw new Error("the server is not answering");
  }
  if (response.status === 401) {
    $("keybar").hidden = false;
    // A key was given and refused: say so, or the form looks as if nothing happened.
    $("key-error").textContent = apiKey ? "That key was refused: check it against the server's FINTWEET_API_KEY." : "";
    $("status-text").textContent = "API key needed";
    if (apiKey) $("key-input").select();  // the refused key, ready to be typed over
    throw new NeedKey("API key needed");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

// --- small DOM helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// Under half a percent but not nothing reads "<1%", not "0%".
const pct = (p) => (p > 0 && p < 0.005 ? "<1%" : `${Math.round(p * 100)}%`);
const fmt = (n) => n.toLocaleString("en-US");

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// Control and invisible direction characters, shown as their escapes (as `fintweet tail` and
// `show` print them): a right-to-left override in a tweet would otherwise make the text on the
// page read differently from what the tweet says.
// Tab, line feed and carriage return stay: on a page they are white space, and a tweet's line
// breaks are common.
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

function visible(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(CONTROL)) {
    out.append(text.slice(last, match.index));
    const code = match[0].codePointAt(0);
    const escape = code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    out.append(el("span", { class: "ctl", title: `U+${code.toString(16).toUpperCase().padStart(4, "0")}, a control character`, text: escape }));
    last = match.index + match[0].length;
  }
  out.append(text.slice(last));
  return out;
}

// Tweet text as DOM nodes: URLs become links, cashtags/mentions/hashtags are highlighted.
// A URL's trailing sentence marks are not part of it, as in core/text.py (`_URL_TRAILING`).
const URL_TRAILING = /[.,;:!?)\]}'"…]+$/;
const TOKEN = /(https?:\/\/[^\s<>"'‘’“”]+|www\.[^\s<>"'‘’“”]+)|(\$[A-Za-z][A-Za-z0-9]{0,9}(?:[._-][A-Za-z0-9]{1,4})?)|(@\w{1,30})|(#\w*[A-Za-z_]\w*)/g;

function richText(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(TOKEN)) {
    out.append(visible(text.slice(last, match.index)));
    const [whole, url, cashtag, mention, hashtag] = match;
    if (url) {
      const link = url.replace(URL_TRAILING, "");
      const href = link.startsWith("www.") ? `https://${link}` : link;
      out.append(el("a", { href, target: "_blank", rel: "noopener noreferrer" }, visible(link)),
        url.slice(link.length));
    } else if (cashtag) {
      // A button, so a keyboard reaches it and Enter or Space opens the series too.
      const ticker = cashtag.slice(1).toUpperCase();
      out.append(el("button", { type: "button", class: "cashtag", text: cashtag,
        title: `Show ${ticker} in the series, over the time range chosen above`,
        onclick: () => pickSeries(showSeries("ticker", ticker)) }));
    } else {
      out.append(el("span", { class: mention ? "mention" : "hashtag", text: mention || hashtag }));
    }
    last = match.index + whole.length;
  }
  out.append(visible(text.slice(last)));
  return out;
}

function sentimentBadge(sentiment) {
  if (!sentiment) return null;
  return el("span", { class: `badge ${sentiment.label}` }, sentiment.label,
    el("span", { class: "pct", text: pct(sentiment.confidence) }));
}

function topicBadge(topic, confidence) {
  return el("span", { class: "badge topic" }, topic,
    confidence == null ? null : el("span", { class: "pct", text: pct(confidence) }));
}

function when(result) {
  const stamp = result.created_at || result.processed_at;
  const date = stamp ? new Date(stamp) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toLocaleTimeString("en-GB") : "";
}

// --- live feed ------------------------------------------------------------------------------

function feedFilters() {
  return { topic: $("feed-topic").value, sentiment: $("feed-sentiment").value };
}

function passes(result) {
  const { topic, sentiment } = feedFilters();
  return (!topic || result.topic === topic)
    && (!sentiment || (result.sentiment && result.sentiment.label === sentiment));
}

function tweetItem(result, fresh) {
  const links = result.links || {};
  const meta = el("div", { class: "tweet-meta" },
    topicBadge(result.topic, result.confidence), sentimentBadge(result.sentiment),
    el("span", { text: when(result) }),
    el("span", { text: `· ${result.source || ""} · id ${result.id}` }));
  if (links.urls && links.urls.length) meta.append(el("span", { text: `· ${links.urls.length} link${links.urls.length > 1 ? "s" : ""}` }));
  return el("li", { class: fresh ? "fresh" : "", "data-id": result.id },
    el("p", { class: "tweet-text" }, richText(result.text || "")), meta);
}

// Returns how many tweets it added.
function addToFeed(results, fresh) {
  const feed = $("feed");
  let added = 0;
  // results arrive oldest first; the feed shows newest first.
  for (const result of results) {
    if (!passes(result) || feed.querySelector(`li[data-id="${CSS.escape(result.id)}"]`)) continue;
    feed.prepend(tweetItem(result, fresh));
    added += 1;
  }
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  showFeedEmpty(feedFailed ? feedError : null);
  return added;
}

// Why the feed is empty: nothing stored yet, a filter nothing matches, or a failed load.
function showFeedEmpty(failure = null) {
  const empty = $("feed-empty");
  empty.hidden = $("feed").children.length > 0;
  empty.classList.toggle("failed", Boolean(failure));
  const { topic, sentiment } = feedFilters();
  if (failure) empty.textContent = `Could not load the feed: ${failure}`;
  else if (topic || sentiment) empty.textContent = "No tweets match these filters yet.";
  else empty.textContent = "Waiting for tweets… start a worker and replay some.";
}

// The feed is not a live region (a batch of 50 tweets read out is noise): a screen reader hears
// "N new tweets" instead, at most every few seconds, the ones in between added to the next.
let unannounced = 0;
let announceTimer = null;

function announce(count) {
  unannounced += count;
  if (announceTimer || !unannounced) return;
  $("feed-news").textContent = `${unannounced} new tweet${unannounced > 1 ? "s" : ""}`;
  unannounced = 0;
  announceTimer = setTimeout(() => { announceTimer = null; announce(0); }, 5000);
}

async function loadFeed() {
  const params = new URLSearchParams({ limit: "30" });
  const { topic, sentiment } = feedFilters();
  if (topic) params.set("topic", topic);
  if (sentiment) params.set("sentiment", sentiment);
  // The stream is already open: what it brings while the page is fetched is put back on top
  // of the fresh page instead of being wiped with the old one.
  const load = { arrived: [] };
  feedLoad = load;
  try {
    const body = await api(`/v1/tweets?${params}`);
    if (feedLoad !== load) return;  // a later load (another filter) owns the feed now
    feedFailed = false;  // before the adds: they say why an empty feed is empty
    $("feed").replaceChildren();
    addToFeed(body.results.slice().reverse(), false);
    addToFeed(load.arrived, true);
  } catch (error) {
    if (feedLoad !== load) return;  // superseded: its failure no longer matters
    feedFailed = true;
    feedError = error instanceof NeedKey ? "this server needs an API key (the form above)" : error.message;
    showFeedEmpty(feedError);
    throw error;
  } finally {
    if (feedLoad === load) feedLoad = null;
  }
}

function reloadFeed() {
  loadFeed().catch(report);
}

function report(error) {
  if (!(error instanceof NeedKey)) console.error(error);  // NeedKey: the key form is shown
}

// reconnecting: this is a new EventSource after one the browser gave up on.
function connectStream(reconnecting = false) {
  if (stream) stream.close();
  clearTimeout(reconnectTimer);
  const url = apiKey ? `/v1/stream?access_token=${encodeURIComponent(apiKey)}` : "/v1/stream";
  stream = new EventSource(url);
  const status = $("status");
  stream.onopen = () => {
    reconnectDelay = 2000;
    const wasDown = status.dataset.state === "error";
    status.dataset.state = "live";
    $("status-text").textContent = "live";
    // The browser's own reconnects resume after the last event id it saw; a new EventSource
    // has none and starts at the newest batch, so what was written while the stream was away
    // is fetched with the feed. Once: later reconnects of this EventSource resume by id.
    if (reconnecting) {
      reconnecting = false;
      reloadFeed();
      refresh();  // the counts too, not at the next timed refresh (up to 30 s later)
    } else if (wasDown) {
      refresh();  // back after the browser's own reconnect: the notice clears now
    }
  };
  stream.onerror = () => {
    status.dataset.state = "error";
    $("status-text").textContent = "reconnecting…";
    // The browser retries a dropped stream by itself, but gives up for good on an answer that
    // is not a stream (503 when the server has all the streams it keeps, or Redis is down):
    // then reconnect here, backing off.
    if (stream.readyState === EventSource.CLOSED) {
      reconnectTimer = setTimeout(() => connectStream(true), reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
    }
  };
  stream.addEventListener("batch", (event) => {
    const batch = JSON.parse(event.data);
    if (feedLoad) feedLoad.arrived.push(...batch.results);
    announce(addToFeed(batch.results, true));
    scheduleRefresh();
    // An event carries a batch's newest results only: with a filter on, matches among the
    // others would be missing until a reload, so reload (at most every few seconds).
    const { topic, sentiment } = feedFilters();
    if ((topic || sentiment) && batch.count > batch.results.length) scheduleFeedReload();
  });
  // The server found this stream too far behind to catch up batch by batch (the page slept):
  // it starts at the newest batch, and the feed is read again.
  stream.addEventListener("reset", reloadFeed);
}

function scheduleFeedReload() {
  if (feedReloadTimer) return;
  feedReloadTimer = setTimeout(() => { feedReloadTimer = null; reloadFeed(); }, 3000);
}

// --- counters, tickers, distribution --------------------------------------------------------

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 1500);
}

function fillTopicFilter(topics) {
  const select = $("feed-topic");
  const known = new Set([...select.options].map((o) => o.value));
  for (const topic of Object.keys(topics).sort()) {
    if (!known.has(topic)) select.append(el("option", { value: topic, text: topic }));
  }
}

function renderStats(stats) {
  const total = stats.processed || 0;
  $("tile-processed").textContent = fmt(total);
  const sentiments = stats.sentiments || {};
  const counted = Object.values(sentiments).reduce((a, b) => a + b, 0);
  $("tile-bullish").textContent = counted ? pct((sentiments.Bullish || 0) / counted) : "–";
  $("tile-bearish").textContent = counted ? pct((sentiments.Bearish || 0) / counted) : "–";
  // Per task: a sentiment replay (`fintweet demo --task sentiment`) labels sentiment only.
  const live = stats.live_accuracy || {};
  const measured = ["topic", "sentiment"].filter((task) => live[task] && live[task].accuracy != null)
    .map((task) => `${task} ${(live[task].accuracy * 100).toFixed(1)}%`);
  $("tile-accuracy").textContent = measured.length ? measured.join(" · ") : "–";
  $("tile-accuracy").title = measured.join(" · ");
  $("tile-accuracy").classList.toggle("small", measured.length > 0);
  const models = Object.keys(stats.models || {});
  $("tile-model").textContent = models.length ? models.join(", ") : "–";
  $("tile-model").title = models.join(", ");

  const bar = $("sentiment-bar");
  bar.replaceChildren();
  for (const label of SENTIMENTS) {
    const share = counted ? (sentiments[label] || 0) / counted : 0;
    if (share <= 0) continue;
    const cls = { Bullish: "bull", Neutral: "neu", Bearish: "bear" }[label];
    bar.append(el("span", { style: `width:${share * 100}%;background:var(--${cls})`,
      title: `${label}: ${fmt(sentiments[label])} (${pct(share)})`,
      "data-labels": JSON.stringify([`${label} ${pct(share)}`, pct(share), ""]) }));
  }
  fitSentimentLabels();

  const bars = $("topic-bars");
  bars.replaceChildren();
  const topics = Object.entries(stats.topics || {}).sort((a, b) => b[1] - a[1]);
  const max = topics.length ? topics[0][1] : 1;
  for (const [topic, count] of topics) {  // every topic: the card says "all tweets"
    bars.append(el("li", { title: `${topic}: ${fmt(count)}` },
      el("span", { class: "name", text: topic }),
      el("span", { class: "meter" }, el("span", { style: `width:${(count / max) * 100}%` })),
      el("span", { class: "num", text: total ? pct(count / total) : "" })));
  }
  if (!topics.length) bars.append(el("li", { class: "empty", text: "No tweets yet." }));
  fillTopicFilter(stats.topics || {});
}

// Each segment of the sentiment bar shows the longest of its labels that fits its width
// ("Bearish 13%", "13%", or none: the title has it all); a cut one read "earish 13". Again on
// every resize, since the widths follow the window.
function fitSentimentLabels() {
  for (const segment of $("sentiment-bar").children) {
    for (const text of JSON.parse(segment.dataset.labels)) {
      segment.textContent = text;
      if (segment.scrollWidth <= segment.clientWidth) break;
    }
  }
}

function renderTickers(tickers) {
  const body = $("tickers").querySelector("tbody");
  body.replaceChildren();
  for (const row of tickers) {
    const mix = el("div", { class: "mix", title: SENTIMENTS.map((s) => `${s} ${row.sentiments[s] || 0}`).join(" · ") });
    const n = SENTIMENTS.reduce((a, s) => a + (row.sentiments[s] || 0), 0) || 1;
    for (const [label, cls] of [["Bullish", "bull"], ["Neutral", "neu"], ["Bearish", "bear"]]) {
      const share = (row.sentiments[label] || 0) / n;
      if (share > 0) mix.append(el("span", { class: cls, style: `width:${share * 100}%` }));
    }
    // The whole row takes a click; the button is there for the keyboard (Enter or Space
    // clicks it, and the click reaches the row's handler).
    body.append(el("tr", { onclick: () => pickSeries(showSeries("ticker", row.ticker)) },
      el("td", {}, el("button", { type: "button", class: "cashtag", text: `$${row.ticker}`,
        title: `Show ${row.ticker} over the ${WINDOWS[$("window").value].name}` })),
      el("td", { class: "num", text: fmt(row.count) }),
      el("td", {}, mix)));
  }
  $("tickers-empty").hidden = tickers.length > 0;
  if (!tickers.length) $("tickers-empty").textContent = `No cashtags in the ${WINDOWS[$("window").value].name}.`;
  fillSeriesValues("ticker", tickers.map((t) => t.ticker));
}

// --- time series ------------------------------------------------------------------------------

let seriesChoices = { ticker: [], topic: [], sentiment: SENTIMENTS };

function fillSeriesValues(field, values) {
  seriesChoices[field] = values;
  if ($("series-field").value !== field) return;
  const select = $("series-value");
  const current = select.value;
  const wanted = values.includes(current) || !current ? values : [current, ...values];
  select.replaceChildren(...wanted.map((v) => el("option", { value: v, text: field === "ticker" ? `$${v}` : v })));
  if (current) select.value = current;
}

function showSeries(field, value) {
  // From a topic or sentiment series: its name is no ticker to keep in the list.
  if ($("series-field").value !== field) $("series-value").replaceChildren();
  $("series-field").value = field;
  const values = seriesChoices[field].includes(value) ? seriesChoices[field] : [value, ...seriesChoices[field]];
  fillSeriesValues(field, values);
  $("series-value").value = value;
  return loadSeries();
}

// A series the user picked: a failure (Redis down, a 422) is said in the chart, which kept the
// previous choice's bars under the new name, and the next refresh reads the range again.
function pickSeries(loading) {
  loading.catch((error) => {
    report(error);
    windowRead = { range: null, at: 0, tickers: null };
    if (!(error instanceof NeedKey)) drawSeries(null, `Could not load the series: ${error.message}`);
  });
}

// Resolves true once the chart shows the current choice; false when the choice changed while
// the answer was on its way (the newer request draws its own).
async function loadSeries() {
  const field = $("series-field").value;
  const value = $("series-value").value;
  if (!value) { drawSeries(null); return true; }
  const range = $("window").value;
  const params = new URLSearchParams({ [field]: value, window: WINDOWS[range].window,
                                       step: WINDOWS[range].step });
  const series = await api(`/v1/series?${params}`);
  if ($("series-field").value !== field || $("series-value").value !== value
      || $("window").value !== range) return false;
  lastSeries = series;
  drawSeries(lastSeries);
  return true;
}

function windowName(minutes) {
  if (minutes === 60) return "last hour";
  if (minutes === 1440) return "last day";
  return `last ${minutes} minute${minutes === 1 ? "" : "s"}`;
}

// The titles follow the range at once; the figures follow with the refresh it starts.
function showWindow() {
  const { name, per } = WINDOWS[$("window").value];
  $("tickers-window").textContent = `· ${name}`;
  $("tickers-empty").textContent = `No cashtags in the ${name}.`;
  $("series-title").textContent = `${name[0].toUpperCase()}${name.slice(1)}, ${per}`;
}

function drawSeries(series, message = "Pick a ticker or a topic") {
  const box = $("series-chart");
  box.replaceChildren();
  const W = 760, H = 300, L = 36, R = 12, T = 14, B = 26;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  box.append(svg);
  if (!series) {
    const text = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" });
    text.textContent = message;
    svg.append(text);
    return;
  }
  svg.setAttribute("aria-label", `${series.value}: tweets per ${series.step_minutes} min`);
  const points = series.points;
  const max = Math.max(1, ...points.map((p) => p.count));
  const step = (W - L - R) / points.length;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
    const label = svgEl("text", { x: L - 6, y: y(v) + 3.5, "text-anchor": "end", class: "tick" });
    label.textContent = v;
    svg.append(label);
  }
  points.forEach((p, i) => {
    const x = L + i * step + step * 0.12;
    const w = Math.max(1, step * 0.76);
    if (p.sentiments) {
      // Stacked by sentiment: bullish at the bottom, then neutral, bearish on top.
      let base = 0;
      for (const [label, cls] of [["Bullish", "bar-bull"], ["Neutral", "bar-neu"], ["Bearish", "bar-bear"]]) {
        const v = p.sentiments[label] || 0;
        if (!v) continue;
        svg.append(svgEl("rect", { x, width: w, y: y(base + v), height: y(base) - y(base + v), class: cls }));
        base += v;
      }
    } else if (p.count) {
      svg.append(svgEl("rect", { x, width: w, y: y(p.count), height: y(0) - y(p.count), class: "bar" }));
    }
    if (i % 10 === 0 || i === points.length - 1) {
      const t = new Date(p.t * 1000);
      const label = svgEl("text", { x: x + w / 2, y: H - 8, "text-anchor": "middle", class: "tick" });
      label.textContent = t.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
      svg.append(label);
    }
  });
  const total = points.reduce((a, p) => a + p.count, 0);
  const caption = svgEl("text", { x: W - R, y: T - 2, "text-anchor": "end", class: "tick" });
  caption.textContent = `${series.field === "ticker" ? "$" : ""}${series.value} · ${fmt(total)} tweet${total === 1 ? "" : "s"} in the ${windowName(series.window_minutes)}`;
  svg.append(caption);
}

// --- classify -------------------------------------------------------------------------------

let classifying = false;

async function classify(event) {
  event.preventDefault();
  const text = $("classify-text").value.trim();
  const box = $("classify-result");
  if (!text) {  // an answer left on screen would read as the empty box's
    box.hidden = false;
    box.replaceChildren(el("div", { class: "error", text: "Type or paste a tweet to classify." }));
    return;
  }
  if (classifying) return;
  // Not `disabled`: a disabled button drops the keyboard focus to the page's start.
  classifying = true;
  $("classify-button").setAttribute("aria-disabled", "true");
  box.hidden = false;
  try {
    const body = await api("/v1/classify", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts: [text] }),
    });
    const r = body.results[0];
    const links = r.links || {};
    const found = [
      ...(links.cashtags || []).map((c) => `$${c}`), ...(links.mentions || []).map((m) => `@${m}`),
      ...(links.hashtags || []).map((h) => `#${h}`), ...(links.urls || []),
    ];
    box.replaceChildren(...[
      el("div", { class: "headline", id: "classify-answer" },
        topicBadge(r.topic, r.confidence), sentimentBadge(r.sentiment)),
      el("ul", { class: "top3" }, ...r.top3.map((t) => el("li", {},
        el("span", { text: t.topic }),
        el("span", { class: "meter" }, el("span", { style: `width:${t.p * 100}%` })),
        el("span", { class: "num", text: pct(t.p) })))),
      found.length ? el("div", { class: "links-line" }, "Links: ", visible(found.join("  "))) : null,
      el("div", { class: "links-line muted", text: `model ${body.model}` })].filter(Boolean));
  } catch (error) {
    // One box, one text: the API's "texts[0]: " names an item this form does not show.
    box.replaceChildren(el("div", { class: "error", text: error.message.replace(/^texts\[0\]: /, "") }));
  } finally {
    classifying = false;
    $("classify-button").removeAttribute("aria-disabled");
  }
}

// --- wiring -----------------------------------------------------------------------------------

async function refresh() {
  try {
    const range = $("window").value;
    const recent = windowRead.range === range && Date.now() - windowRead.at < WINDOWS[range].rereadMs;
    // Settled apart: a range the API refuses (one past the buckets' retention) must not keep
    // the totals from drawing too.
    const [statsRead, tickersRead] = await Promise.allSettled([
      api("/v1/stats"),
      recent ? windowRead.tickers : api(`/v1/tickers?window=${WINDOWS[range].window}&n=10`)]);
    if (statsRead.status === "rejected") {
      const reason = statsRead.reason;
      if (!(reason instanceof NeedKey)) {
        // Left as they were, the figures would read as current: they are not.
        $("notice").textContent = `Could not read the counts (the figures below may be out of date): ${reason.message}`;
        $("notice").hidden = false;
        // An empty table said "No cashtags in the last hour", as if the stream had none.
        if (!$("tickers").querySelector("tbody tr")) {
          $("tickers-empty").textContent = "Could not read the tickers.";
        }
      }
      throw reason;
    }
    $("notice").hidden = true;
    if ($("window").value !== range) return;  // the range changed meanwhile: its refresh draws
    const stats = statsRead.value;
    // The API answers again after the feed failed to load (Redis was down when the page opened).
    if (feedFailed && !feedLoad) reloadFeed();
    renderStats(stats);
    if (tickersRead.status === "rejected") {  // the series of that range would be refused too
      renderTickers([]);
      $("tickers-empty").textContent = tickersRead.reason.message;  // the API's reason
      drawSeries(null, `Could not load the series: ${tickersRead.reason.message}`);
      throw tickersRead.reason;
    }
    const tickers = tickersRead.value;
    renderTickers(tickers.tickers);
    fillSeriesValues("topic", Object.keys(stats.topics || {}));
    let drawn = recent;
    if (!$("series-value").value) {
      const first = tickers.tickers[0];
      if (first) drawn = await showSeries("ticker", first.ticker);
      else if (Object.keys(stats.topics || {}).length) drawn = await showSeries("topic", Object.keys(stats.topics)[0]);
      else drawn = await loadSeries();  // an empty chart
    } else if (!recent) {
      drawn = await loadSeries();
    }
    // Only a range whose tickers and series both showed waits rereadMs: a series that failed or
    // was dropped is read again by the next refresh, not left on another range for 30 s.
    if (!recent && drawn && $("window").value === range) windowRead = { range, at: Date.now(), tickers };
  } catch (error) {
    report(error);
  }
}

// A deployment may keep the per-minute buckets for less than a day (FINTWEET_BUCKET_RETENTION_S):
// the API refuses a longer range, so the picker does not offer it; kept under an hour, the
// shortest range becomes all the buckets hold ("Last 30 minutes": its WINDOWS entry, keyed
// "1h" as the option is, is rewritten to ask for 30 minutes).
async function offerRetainedRanges() {
  let most;
  try {
    most = (await api("/v1/limits")).window_minutes_max;
  } catch (error) {
    if (error instanceof NeedKey) throw error;
    console.error(error);  // every range stays offered; a refused one says why in its cards
    return;
  }
  const [shortest, ...longer] = $("window").options;
  const hour = WINDOWS[shortest.value];
  if (most < hour.minutes) {
    const name = windowName(most);
    WINDOWS[shortest.value] = { ...hour, name, window: `${most}m`, minutes: most };
    shortest.textContent = name[0].toUpperCase() + name.slice(1);
  }
  for (const option of longer) {
    option.disabled = WINDOWS[option.value].minutes > most;
    option.title = option.disabled ? `Per-minute counts are kept for ${most} minutes only` : "";
  }
  if ($("window").selectedOptions[0]?.disabled) {  // the longest range still offered
    $("window").value = [...$("window").options].filter((o) => !o.disabled).pop().value;
  }
  showWindow();
}

async function start() {
  try {
    // Before the stream: a batch arriving first would refresh a range the API may refuse.
    // It reads no Redis, so the feed's head start below is not lost waiting for it.
    await offerRetainedRanges();
  } catch (error) {
    if (error instanceof NeedKey) return;  // the key form is shown; start() runs again with a key
    console.error(error);
  }
  connectStream();  // first: a batch written while the feed loads is not missed
  try {
    await loadFeed();
  } catch (error) {
    if (error instanceof NeedKey) {  // the key form is shown; start() runs again with a key
      clearTimeout(reconnectTimer);
      stream.close();
      return;
    }
    console.error(error);
  }
  await refresh();
  // the stream triggers refreshes; this catches quiet spells
  if (!quietTimer) quietTimer = setInterval(refresh, REFRESH_MS * 6);
}

$("classify-form").addEventListener("submit", classify);
$("classify-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify(e);
});
$("feed-topic").addEventListener("change", reloadFeed);
$("feed-sentiment").addEventListener("change", reloadFeed);
$("series-field").addEventListener("change", () => {
  const field = $("series-field").value;
  $("series-value").replaceChildren();
  fillSeriesValues(field, seriesChoices[field]);
  pickSeries(loadSeries());
});
$("series-value").addEventListener("change", () => pickSeries(loadSeries()));
$("ticker-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("ticker-input");
  const ticker = input.value.trim().replace(/^\$/, "").toUpperCase();
  if (!ticker) return;
  // The API's rule (core/reader.py ticker_filter): a bad one stays in the box to be fixed,
  // and is not asked for again by every refresh.
  if (!/^[A-Z0-9._-]{1,16}$/.test(ticker)) {
    input.setCustomValidity("Not a ticker: use a cashtag such as TSLA or $TSLA");
    input.reportValidity();
    return;
  }
  input.value = "";
  pickSeries(showSeries("ticker", ticker));
});
$("ticker-input").addEventListener("input", () => $("ticker-input").setCustomValidity(""));
$("window").addEventListener("change", () => { showWindow(); refresh(); });
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = $("key-input").value.trim();
  sessionStorage.setItem("fintweet-key", apiKey);
  $("keybar").hidden = true;
  // An answer refused for want of the key is not one to leave under the box.
  if ($("classify-result").querySelector(".error")) $("classify-result").hidden = true;
  start();
});
showWindow();  // a reload may restore the last range chosen (Firefox keeps form state)
window.addEventListener("resize", fitSentimentLabels);
drawSeries(null);
start();
