--- The callpipe-asr native job API: submit a recording, wait for its transcript.
--
--   POST {url}/api/v1/jobs   multipart file (+ language, model, wait, word_timestamps=false,
--                            segment_timestamps=false)
--        -> 200 finished job | 202 {"id", "status"} | 4xx/5xx {"error": {code, message}}
--        -> 429 + Retry-After when the queue is full
--   GET  {url}/api/v1/jobs/{id} -> {"status": queued|running|done|failed, "error", "transcript"}
--
-- Everything happens within one deadline (`timeout` seconds from the start): each request's
-- curl --max-time is cut to what is left, and no retry sleeps past it. Connection failures,
-- 429 and 5xx are retried up to `retries` times with exponential backoff (Retry-After when the
-- server sends one); any other 4xx is final: sending the same request again cannot help.

local http = require("callpipe_asr.http")
local json = require("callpipe_asr.json")

local M = {}

local MAX_BACKOFF_SECONDS = 30
local MAX_POLL_INTERVAL_SECONDS = 10
local POST_WAIT_CAP_SECONDS = 30 -- the server holds a POST at most this long for the result

--- Seconds to wait before retry number `attempt` (1, 2, 4, ... capped).
function M.backoff_seconds(attempt)
  return math.min(MAX_BACKOFF_SECONDS, 2 ^ (attempt - 1))
end

local function error_from_body(body)
  local document = json.decode(body or "")
  local err = type(document) == "table" and json.value(document.error)
  if type(err) == "table" then
    return json.value(err.code), json.value(err.message)
  end
  return nil, nil
end

local CURL_TIMED_OUT = 28

--- Why a response is not a success, whether trying again may help, and what the e-mail says.
local function classify(response)
  if response.status == nil then
    local transient = http.TRANSIENT_EXIT_CODES[response.exit_code]
    return {
      retry = transient ~= nil,
      code = response.exit_code == CURL_TIMED_OUT and "timeout" or "connection",
      detail = string.format("%s (curl exit %s)", response.error or transient or "no response", tostring(response.exit_code)),
      reason = response.exit_code == CURL_TIMED_OUT and "the transcription server did not answer in time"
        or "the transcription server could not be reached",
    }
  end
  local code, message = error_from_body(response.body)
  local detail = string.format("HTTP %d%s%s", response.status, code and (" " .. code) or "",
    message and (": " .. message) or "")
  local reason
  if response.status == 429 then
    reason = "the transcription server is busy"
  elseif response.status >= 500 then
    reason = "the transcription server had an internal error"
  elseif response.status == 401 or response.status == 403 then
    -- Say so plainly: the admin must fix callpipe_asr_api_key, not the recording.
    reason = "the transcription server did not accept the API key (HTTP " .. response.status .. ")"
  else
    reason = "the transcription server refused the recording"
      .. (type(message) == "string" and (" (" .. message .. ")") or string.format(" (HTTP %d)", response.status))
  end
  return {
    retry = response.status == 429 or response.status >= 500,
    code = code or ("http_" .. response.status),
    status = response.status,
    detail = detail,
    reason = reason,
    retry_after = tonumber((response.headers["retry-after"] or ""):match("^%s*(%d+)%s*$")),
  }
end

--- Transcribe one recording.
-- options: url, api_key, language, model, timeout, retries, connect_timeout, poll_interval,
--          wait, path, filename, curl
-- host:    { now_ms = function() -> ms, sleep_ms = function(ms), log = function(level, message) }
-- Returns { ok = true, text, duration, language, job_id, elapsed }
--      or { ok = false, reason (for the e-mail), detail (for the console), code, job_id, elapsed }.
function M.transcribe(options, host)
  local started = host.now_ms()
  local deadline = started + options.timeout * 1000
  local base = options.url:gsub("/+$", "")
  local job_id, last_status

  local function remaining_seconds()
    return (deadline - host.now_ms()) / 1000
  end

  local function finish(result)
    result.job_id = result.job_id or job_id
    result.elapsed = (host.now_ms() - started) / 1000
    return result
  end

  local function give_up(reason, detail, code)
    return finish({ ok = false, reason = reason, detail = detail, code = code })
  end

  local function timed_out()
    local detail = string.format("no transcript within the %g s timeout", options.timeout)
    if job_id then
      detail = detail .. string.format(" (job %s was %s)", job_id, last_status or "submitted")
    end
    return give_up(string.format("the transcription server did not finish within %g seconds", options.timeout),
      detail, "timeout")
  end

  -- One request with the retry policy. Returns the response, or nil and a finished failure.
  local function with_retries(what, build)
    local attempt = 0
    while true do
      attempt = attempt + 1
      local left = remaining_seconds()
      if left < 0.5 then
        return nil, timed_out()
      end
      local request = build(left)
      request.connect_timeout = math.min(options.connect_timeout, left)
      request.max_time = math.min(request.max_time or left, left)
      request.api_key = options.api_key
      request.curl = options.curl
      local response = http.request(request)
      if response.status and response.status >= 200 and response.status < 300 then
        return response
      end
      local failure = classify(response)
      if not failure.retry or attempt > options.retries then
        local detail = string.format("%s failed after %d attempt(s): %s", what, attempt, failure.detail)
        return nil, give_up(failure.reason, detail, failure.code)
      end
      local delay = failure.retry_after or M.backoff_seconds(attempt)
      if delay > remaining_seconds() - 0.5 then
        -- The next try could not even start before the deadline: stop now, with the real cause.
        local detail = string.format("%s failed after %d attempt(s): %s; a retry in %g s would pass the %g s timeout",
          what, attempt, failure.detail, delay, options.timeout)
        return nil, give_up(failure.reason, detail, failure.code)
      end
      host.log("warning", string.format("%s: %s; retry %d of %d in %g s%s", what, failure.detail, attempt,
        options.retries, delay, failure.retry_after and " (Retry-After)" or ""))
      host.sleep_ms(delay * 1000)
    end
  end

  -- The job document of a 200/202 answer, or nil and a finished failure.
  local function document_of(response, what)
    local document, problem = json.decode(response.body)
    if type(document) ~= "table" then
      return nil, give_up("the transcription server sent an unreadable answer",
        string.format("%s: HTTP %s with a body that is not a JSON object (%s)", what,
          tostring(response.status), problem or "no object"), "bad_response")
    end
    return document
  end

  local function outcome(document)
    local status = json.value(document.status)
    last_status = status
    if status == "done" then
      local transcript = json.value(document.transcript)
      local content = type(transcript) == "table" and json.value(transcript.text) or ""
      return finish({
        ok = true,
        text = type(content) == "string" and content or "",
        duration = tonumber(json.value(document.audio_duration))
          or (type(transcript) == "table" and tonumber(json.value(transcript.duration))) or nil,
        language = type(transcript) == "table" and json.value(transcript.language) or nil,
      })
    elseif status == "failed" then
      local err = json.value(document.error)
      local code = type(err) == "table" and json.value(err.code) or "failed"
      local message = type(err) == "table" and json.value(err.message) or "no reason given"
      return give_up("the recording could not be transcribed (" .. tostring(message) .. ")",
        string.format("job %s failed: %s: %s", tostring(job_id), tostring(code), tostring(message)), code)
    end
    return nil
  end

  -- 1. Submit. `wait` lets the server answer with the finished job when it is quick, which
  -- saves polling for the usual short voicemail.
  local response, failure = with_retries("POST /api/v1/jobs", function(left)
    local wait = math.floor(math.min(options.wait, POST_WAIT_CAP_SECONDS, left - 2))
    local fields = {}
    if options.language then
      fields[#fields + 1] = { "language", options.language }
    end
    if options.model then
      fields[#fields + 1] = { "model", options.model }
    end
    if wait > 0 then
      fields[#fields + 1] = { "wait", tostring(wait) }
    end
    -- The e-mail carries the text only: no word or segment timings (the server skips Whisper's
    -- alignment pass, ~10% of the work, and its timestamp tokens, ~5%)
    fields[#fields + 1] = { "word_timestamps", "false" }
    fields[#fields + 1] = { "segment_timestamps", "false" }
    return {
      method = "POST",
      url = base .. "/api/v1/jobs",
      fields = fields,
      file = { field = "file", path = options.path, filename = options.filename },
    }
  end)
  if not response then
    return failure
  end
  local document, bad = document_of(response, "POST /api/v1/jobs")
  if not document then
    return bad
  end
  job_id = json.value(document.id)
  if type(job_id) ~= "string" or not job_id:match("^[%w_%-]+$") then
    return give_up("the transcription server sent an unreadable answer",
      "POST /api/v1/jobs: the answer has no usable job id", "bad_response")
  end
  host.log("info", string.format("job %s accepted (%s)", job_id, tostring(json.value(document.status))))
  local result = outcome(document)
  if result then
    return result
  end

  -- 2. Poll until the job ends or the deadline passes. A 202 answer names the status but
  -- carries no transcript, so "done" there still needs one GET.
  local interval = options.poll_interval
  local first = true
  while true do
    local left = remaining_seconds()
    if left < 0.5 then
      return timed_out()
    end
    if not (first and (last_status == "done" or last_status == "failed")) then
      host.sleep_ms(math.min(interval, left - 0.25) * 1000)
      interval = math.min(interval * 1.5, MAX_POLL_INTERVAL_SECONDS)
    end
    first = false
    local polled, poll_failure = with_retries("GET /api/v1/jobs/" .. job_id, function()
      return { method = "GET", url = base .. "/api/v1/jobs/" .. job_id, max_time = 30 }
    end)
    if not polled then
      return poll_failure
    end
    local current, unreadable = document_of(polled, "GET /api/v1/jobs/" .. job_id)
    if not current then
      return unreadable
    end
    result = outcome(current)
    host.log("debug", string.format("job %s is %s", job_id, tostring(last_status)))
    if result then
      return result
    end
  end
end

return M
