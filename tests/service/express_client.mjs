// What an Express app does with the decision service: one POST /v1/check per chat message,
// keyed by the session cookie, answering the service's status/headers/body to its client.
// Usage: node express_client.mjs http://127.0.0.1:PORT   (prints one JSON line per step)
const base = process.argv[2];

async function check(sid) {
  const res = await fetch(`${base}/v1/check`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      request: { method: "POST", path: "/api/chat", ip: "198.51.100.20", headers: { cookie: `sid=${sid}` } },
    }),
  });
  return res.json();
}

async function advance(seconds) {
  // the test's hook into the service's clock (no real waiting)
  await fetch(`${base}/_test/clock`, { method: "POST", body: JSON.stringify({ advance: seconds }) });
}

const out = [];
let firstDenied = null;
for (let i = 1; i <= 6; i++) {
  const d = await check("sess-1");
  out.push({ step: i, allowed: d.allowed, status: d.status, windows: d.decisions.map((w) => w.remaining) });
  if (!d.allowed && firstDenied === null) {
    firstDenied = i;
    out.push({ denied: i, body: d.body, retryAfter: d.headers["Retry-After"], exact: d.retry_after });
    await advance(d.retry_after);
    const again = await check("sess-1");
    out.push({ retry: again.allowed, windows: again.decisions.map((w) => w.remaining) });
  }
  await advance(1);
}
const other = await check("sess-2");
out.push({ otherSession: other.allowed });
const health = await fetch(`${base}/v1/check`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ request: { method: "GET", path: "/health", headers: { cookie: "sid=sess-1" } } }),
});
out.push({ health: (await health.json()).allowed });
console.log(JSON.stringify(out));
