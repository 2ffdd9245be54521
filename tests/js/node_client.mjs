// The store's server sending with analytics-node (@segment/analytics-node from npm, unchanged) and the
// secret server write key: the customer's newsletter consent and their order.
// Usage: node node_client.mjs <ingest URL> <write key> <JSON list of calls: [["identify", {...}], ...]>
import { Analytics } from "@segment/analytics-node";

const [host, writeKey, callsJson] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 1, maxRetries: 2 });
const failures = [];
analytics.on("error", (error) => failures.push(String(error.reason ?? error.code ?? error)));
const statuses = [];
analytics.on("http_request", (request) => statuses.push(request.url));
for (const [method, message] of JSON.parse(callsJson)) {
  analytics[method](message);
}
await analytics.closeAndFlush({ timeout: 30000 });
console.log(JSON.stringify({ failures, requests: statuses }));
process.exit(failures.length ? 1 : 0);
