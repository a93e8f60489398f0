// ImportUrl: a URL fetched through the kit's SSRF-safe client and recorded
// like an upload (origin URL). Every refusal is typed: the URL itself
// (scheme, userinfo, port, blocked address in any notation) is
// INVALID_ARGUMENT on `url`; what the remote did (redirect to a refused
// target, TLS, unreachable, error status) is FAILED_PRECONDITION; too many
// bytes RESOURCE_EXHAUSTED; too slow DEADLINE_EXCEEDED.
import {
  FailedPreconditionError,
  isSafeFetchError,
  type Principal,
  ResourceExhaustedError,
  type SafeFetchError,
  type SafeFetchOptions,
  SpoolError,
  safeFetch,
  safeFetchErrorToSpoolError,
} from "@spool/kit";
import { FileOrigin } from "@spool/proto/spool/files/v1/events.js";
import type { Files, Recorded } from "./files.js";

export interface ImportSettings {
  maxBytes: number;
  timeoutMs: number;
  maxRedirects: number;
  allowHttp: boolean;
  allowedPorts: readonly number[];
  /** Tests and local development only (config refuses it in production). */
  unsafeAllowedTargets: readonly string[];
  /** Trusted CAs replacing the default roots (tests). */
  ca?: string | Buffer;
}

export interface ImportRequest {
  url: string;
  displayName: string;
  contentType: string;
}

/** The URL as recorded: without credentials, query or fragment (signed URLs carry secrets there). */
export function recordableUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "";
  }
}

/** The last path segment of the URL, or "download". */
function nameFromUrl(url: string): string {
  try {
    const last = new URL(url).pathname.split("/").filter(Boolean).at(-1);
    return last ? decodeURIComponent(last) : "download";
  } catch {
    return "download";
  }
}

function fetchFailure(e: SafeFetchError): SpoolError {
  if (e.reason === "RESPONSE_TOO_LARGE" || e.reason === "DECOMPRESSION_LIMIT")
    return new ResourceExhaustedError(`the URL's content is over the import limit (${e.reason})`);
  if (e.reason === "TIMEOUT")
    return new SpoolError("DEADLINE_EXCEEDED", `the import took too long (${e.reason})`);
  return safeFetchErrorToSpoolError(e, "url");
}

export async function importUrl(
  files: Files,
  settings: ImportSettings,
  caller: Principal,
  req: ImportRequest,
  signal: AbortSignal,
): Promise<Recorded> {
  const ingest = {
    displayName: req.displayName || nameFromUrl(req.url),
    displayNameField: req.displayName ? "display_name" : "url",
    declaredContentType: req.contentType,
    contentTypeField: "content_type",
    origin: FileOrigin.FILE_ORIGIN_URL,
    sourceUrl: recordableUrl(req.url),
    maxBytes: settings.maxBytes,
  };
  files.precheck(ingest);
  await files.takeUploadSlot(caller);
  const options: SafeFetchOptions = {
    allowHttp: settings.allowHttp,
    allowedPorts: settings.allowedPorts,
    maxRedirects: settings.maxRedirects,
    timeoutMs: settings.timeoutMs,
    maxResponseBytes: settings.maxBytes,
    maxDecompressedBytes: settings.maxBytes,
    signal,
    ...(settings.unsafeAllowedTargets.length > 0
      ? { unsafeAllowedTargets: settings.unsafeAllowedTargets }
      : {}),
    ...(settings.ca ? { ca: settings.ca } : {}),
  };
  try {
    const response = await safeFetch(req.url, options);
    if (response.status < 200 || response.status > 299) {
      response.cancel();
      throw new FailedPreconditionError(`the URL answered HTTP ${response.status}`);
    }
    return await files.ingest(caller, ingest, response.body, signal);
  } catch (e) {
    throw isSafeFetchError(e) ? fetchFailure(e) : e;
  }
}
