// ratewarden.js: the browser side of a 429. One ES module, no dependencies, no build step.
//
//   import { protect } from "/ratewarden.js";
//   const save = document.querySelector("#save");
//   const send = protect(save, { message: "#save-msg", quota: "#save-quota" });
//   save.addEventListener("click", () => send("/api/save", { method: "POST", body: "..." }));
//
// protect(control, options) returns a fetch that, on a 429, disables the control and shows
// "Try again in N s" in the message element (an aria-live region), counting down from what the
// server said: the body's retry_after (also retryAfter, cooldownSeconds, detail.retry_after),
// else the Retry-After header (seconds or an HTTP date), else the largest t of the RateLimit
// items whose r is 0. When the countdown reaches 0 the control is enabled again. The quota
// element, when given, shows what the RateLimit headers say is left ("3 of 5 left").
// The server decides every duration; the page never invents one (unless it said nothing at all:
// then options.fallback seconds, default 10).

const BODY_FIELDS = ["retry_after", "retryAfter", "cooldownSeconds", "cooldown_seconds", "retry_after_seconds"];

function element(ref) {
  if (!ref) return null;
  return typeof ref === "string" ? document.querySelector(ref) : ref;
}

function wholeSeconds(value) {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isFinite(n) || n < 0) return null;
  return Math.ceil(n);
}

// Items of a RateLimit (or RateLimit-Policy) field: [{ name, params: { r, t, q, w } }].
export function parseRateLimit(value) {
  const items = [];
  if (!value) return items;
  const member = /\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z*][\w:/.*%!#$&'+^`|~-]*))((?:\s*;\s*[a-z*][a-z0-9_.*-]*(?:=(?:"(?:[^"\\]|\\.)*"|[^;,"]*))?)*)\s*(?:,|$)/y;
  const param = /;\s*([a-z*][a-z0-9_.*-]*)(?:=("(?:[^"\\]|\\.)*"|[^;,"]*))?/g;
  let pos = 0;
  while (pos < value.length) {
    member.lastIndex = pos;
    const m = member.exec(value);
    if (!m || member.lastIndex === pos) {
      const next = value.indexOf(",", pos);
      if (next < 0) break;
      pos = next + 1;
      continue;
    }
    pos = member.lastIndex;
    const params = {};
    for (const p of (m[3] || "").matchAll(param)) {
      const n = Number((p[2] || "").trim());
      params[p[1]] = Number.isFinite(n) ? n : p[2];
    }
    items.push({ name: m[1] !== undefined ? m[1] : m[2], params });
  }
  return items;
}

// Seconds until a retry may pass, from the body of a 429 (any of the usual shapes) or null.
export function retryAfterFromBody(body) {
  if (!body || typeof body !== "object") return null;
  const places = [body, body.detail, body.error, body.data];
  for (const place of places) {
    if (!place || typeof place !== "object") continue;
    for (const field of BODY_FIELDS) {
      const s = wholeSeconds(place[field]);
      if (s !== null) return s;
    }
  }
  const reset = body.resetTime || body.reset_time;
  if (typeof reset === "string") {
    const at = Date.parse(reset);
    if (!Number.isNaN(at)) return Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }
  return null;
}

// Seconds until a retry may pass, from the headers: Retry-After, else RateLimit t where r=0.
export function retryAfterFromHeaders(headers) {
  const ra = headers.get("Retry-After");
  if (ra !== null) {
    if (/^\s*\d+\s*$/.test(ra)) return Number(ra);
    const at = Date.parse(ra);
    if (!Number.isNaN(at)) return Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }
  const empty = parseRateLimit(headers.get("RateLimit"))
    .filter((i) => i.params.r === 0 && typeof i.params.t === "number")
    .map((i) => i.params.t);
  return empty.length ? Math.max(...empty) : null;
}

// What is left of the most restrictive policy: { name, remaining, limit, reset } or null.
export function quotaFrom(headers) {
  const items = parseRateLimit(headers.get("RateLimit"));
  const limits = {};
  for (const p of parseRateLimit(headers.get("RateLimit-Policy"))) limits[p.name] = p.params.q;
  let best = null;
  for (const i of items) {
    if (typeof i.params.r !== "number") continue;
    const q = { name: i.name, remaining: i.params.r, limit: limits[i.name] ?? null, reset: i.params.t ?? null };
    if (!best || q.remaining < best.remaining || (q.remaining === best.remaining && (q.reset ?? 0) > (best.reset ?? 0))) {
      best = q;
    }
  }
  if (best) return best;
  const remaining = headers.get("X-RateLimit-Remaining");
  if (remaining === null || Number.isNaN(Number(remaining))) return null;
  const limit = headers.get("X-RateLimit-Limit");
  const reset = headers.get("X-RateLimit-Reset");
  return {
    name: null,
    remaining: Number(remaining),
    limit: limit === null ? null : Number(limit),
    reset: reset === null ? null : Number(reset),
  };
}

const cooldowns = new WeakMap();

function say(message, text) {
  if (message) message.textContent = text;
}

// Disable control for seconds, counting down in message; returns a promise that resolves when
// the control is enabled again. A new cooldown on the same control replaces the old one.
export function cooldown(controlRef, seconds, options = {}) {
  const control = element(controlRef);
  const message = element(options.message);
  const format = options.format || ((n) => `Too many requests. Try again in ${n} s.`);
  const done = options.doneText ?? "You can try again now.";
  if (message) {
    if (!message.hasAttribute("aria-live")) message.setAttribute("aria-live", "polite");
    if (!message.hasAttribute("role")) message.setAttribute("role", "status");
    if (!message.id) message.id = `rw-msg-${Math.random().toString(36).slice(2, 9)}`;
  }
  const previous = control ? cooldowns.get(control) : null;
  if (previous) clearInterval(previous.timer);
  const until = Date.now() + seconds * 1000;
  if (control) {
    control.disabled = true;
    control.setAttribute("aria-disabled", "true");
    control.dataset.rwCooldown = String(seconds);
    if (message) control.setAttribute("aria-describedby", message.id);
  }
  return new Promise((resolve) => {
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      if (left > 0) {
        say(message, format(left));
        if (control) control.dataset.rwCooldown = String(left);
        return;
      }
      clearInterval(state.timer);
      if (control) {
        cooldowns.delete(control);
        control.disabled = false;
        control.removeAttribute("aria-disabled");
        delete control.dataset.rwCooldown;
      }
      say(message, done);
      if (options.onReady) options.onReady();
      resolve();
    };
    const state = { timer: setInterval(tick, 250) };
    if (control) cooldowns.set(control, state);
    tick();
  });
}

// Show a quota in el: "3 of 5 left"; data-rw-warn="true" once 80 % is used.
export function showQuota(elRef, quota, options = {}) {
  const el = element(elRef);
  if (!el || !quota) return;
  const format = options.quotaFormat || ((q) => (q.limit == null ? `${q.remaining} left` : `${q.remaining} of ${q.limit} left`));
  el.textContent = format(quota);
  const warn = quota.limit ? quota.remaining <= quota.limit * 0.2 : quota.remaining === 0;
  el.dataset.rwWarn = String(warn);
}

// A fetch bound to a control: see the top of this file. Options: message, quota (elements or
// selectors), statuses (default [429]), fallback (seconds), format(n), doneText, quotaFormat(q),
// onLimited({ seconds, response, body }), fetch (the fetch to wrap, default window.fetch).
export function protect(controlRef, options = {}) {
  const doFetch = options.fetch || ((...args) => fetch(...args));
  const statuses = options.statuses || [429];
  return async function limitedFetch(input, init) {
    const control = element(controlRef);
    const response = await doFetch(input, init);
    const quota = quotaFrom(response.headers);
    if (quota) showQuota(options.quota, quota, options);
    if (!statuses.includes(response.status)) {
      if (response.ok && !(control && cooldowns.has(control))) say(element(options.message), "");
      return response;
    }
    let body = null;
    try {
      body = await response.clone().json();
    } catch {
      body = null;
    }
    let seconds = retryAfterFromBody(body);
    if (seconds === null) seconds = retryAfterFromHeaders(response.headers);
    if (seconds === null) seconds = options.fallback ?? 10;
    if (options.quota && body && typeof body === "object") {
      const left = body.remaining ?? body.quotaRemaining;
      if (typeof left === "number") showQuota(options.quota, { ...(quota || {}), remaining: left, limit: body.limit ?? quota?.limit ?? null }, options);
    }
    if (options.onLimited) options.onLimited({ seconds, response, body });
    cooldown(control, Math.max(1, seconds), options);
    return response;
  };
}
