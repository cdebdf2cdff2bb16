// Outbound HTTP through the runtime's `fetch` (wasi:http underneath). Every request is
// denied unless the agent's policy grants HTTP to its scheme, host and port; a refused
// or failed request throws an HttpError. Requests are async: make the action async.
//   run: async ({ symbol }) => (await http.get(`https://api.example.com/price/${symbol}`)).json()
import { HttpError } from "./errors.js";

/** Sends one request and reads the whole response: { status, headers, body (text), json() }. */
export async function request(method, url, { body, headers = {} } = {}) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new HttpError("invalid_url", `${url}: not a URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new HttpError("invalid_url", `${url}: expected http:// or https://`);
  }
  let response;
  try {
    response = await fetch(url, { method, body, headers });
  } catch (e) {
    // The runtime reports a refusal (no grant, a private address) as a failed fetch.
    throw new HttpError("http_request_failed", `${method} ${url}: ${e && e.message ? e.message : e}`);
  }
  const text = await response.text();
  return {
    status: response.status,
    headers: Object.fromEntries(response.headers),
    body: text,
    json() {
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new HttpError("invalid_response", `the body is not JSON: ${e.message}`);
      }
    },
  };
}

export function get(url, options = {}) {
  return request("GET", url, options);
}

export function post(url, body, options = {}) {
  return request("POST", url, { ...options, body });
}
