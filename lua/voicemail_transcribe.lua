--[==[
voicemail_transcribe.lua: transcribe a FreeSWITCH voicemail or call recording with callpipe-asr
and deliver the text.

Two ways in:

  * With a channel (the `lua` dialplan application, or `record_post_process_exec_api=lua:...`,
    which FreeSWITCH runs with the call's session when the recording file closes): read the
    call's variables, hand the work to a background job (`bgapi lua <this script> <args>`) and
    return at once. The caller's channel never waits for HTTP.

  * Without a channel (`bgapi lua ...`, `luarun ...`, `fs_cli -x "lua ..."`): do the work.

      lua voicemail_transcribe.lua <recording> [<uuid> [<domain> [<extension>]]] [name=value ...]

    Every argument is percent-decoded (%20 is a space, %3D is '='); "-" means "not given".
    Options: caller_id_name, caller_id_number, received (epoch seconds), and the settings of
    callpipe_asr/config.lua (url, language, timeout, retries, delivery, email_to, ...).

The work: POST the recording to callpipe-asr's job API, wait for the transcript within
`timeout`, then deliver it (setting `delivery`, any of):
  file      <recording without extension>.txt next to the recording (success only);
  variable  callpipe_asr_transcript / _status / _error on the call, if it is still up;
  email     freeswitch.email() to `email_to` (else the mailbox's vm-mailto) with the transcript
            in text and HTML and the recording attached.
When transcription fails (server down, timeout, refused recording) the e-mail still goes out
with a "Transcription unavailable: <reason>." line, and the details go to the console log.

The script never deletes, moves or rewrites the recording.
]==]

local SCRIPT_PATH = debug.getinfo(1, "S").source:gsub("^@", "")
local SCRIPT_DIR = SCRIPT_PATH:match("^(.*)/[^/]*$") or "."
-- Our modules live next to the script, wherever it is installed: no lua.conf.xml change needed.
package.path = SCRIPT_DIR .. "/?.lua;" .. package.path

local text = require("callpipe_asr.text")
local config = require("callpipe_asr.config")
local client = require("callpipe_asr.client")
local mail = require("callpipe_asr.mail")
local json = require("callpipe_asr.json")

local LOG_PREFIX = "[callpipe_asr] "
local UNAVAILABLE_LINE = "Transcription unavailable: %s."
local NO_SPEECH_LINE = "(No speech was recognised in this recording.)"
local VARIABLE_TRANSCRIPT = "callpipe_asr_transcript"
local HANDED_OFF_VARIABLE = "callpipe_asr_handed_off"

-- Used when a template file is missing: the e-mail must go out all the same.
local FALLBACK_TEXT_TEMPLATE = "Voicemail for ${extension} from ${caller_id_name} <${caller_id_number}>, "
  .. "${message_date}, ${message_duration}.\n\nTranscription:\n${message_text}\n"
local FALLBACK_HTML_TEMPLATE = "<p>Voicemail for ${extension} from ${caller_id_name} "
  .. "&lt;${caller_id_number}&gt;, ${message_date}, ${message_duration}.</p>\n"
  .. "<p><b>Transcription:</b><br>\n${message_text}</p>\n"

local api = freeswitch.API()

local function log(level, message)
  freeswitch.consoleLog(level, LOG_PREFIX .. message .. "\n")
end

--- Answer the API caller (fs_cli, or the BACKGROUND_JOB event of a bgapi), when there is one.
local function reply(line)
  if stream ~= nil then
    stream:write(line .. "\n")
  end
end

local function global(name)
  local value = freeswitch.getGlobalVariable(name)
  if value == nil or value == "" then
    return nil
  end
  return value
end

--- Milliseconds, from FreeSWITCH's clock (os.time() has only whole seconds).
local function now_ms()
  local ok, value = pcall(function()
    return tonumber(api:getTime())
  end)
  if ok and value then
    return value
  end
  return os.time() * 1000
end

local function basename(path)
  return path:match("([^/]*)$")
end

-- Validators for values that end up in FreeSWITCH API arguments or file names.
local function valid_uuid(value)
  return type(value) == "string" and #value <= 64 and value:match("^[%w][%w%-_%.]*$") ~= nil
end

local function valid_domain(value)
  return type(value) == "string" and #value <= 253 and value:match("^[%w][%w%.%-]*$") ~= nil
end

local function valid_extension(value)
  return type(value) == "string" and #value <= 64 and value:match("^[%w][%w%._%-]*$") ~= nil
end

---------------------------------------------------------------------------------------------
-- With a channel: hand off to a background job.
---------------------------------------------------------------------------------------------

local function hand_off(channel)
  local uuid = channel:get_uuid()
  local function variable(name)
    local value = channel:getVariable(name)
    if value == nil or value == "" then
      return nil
    end
    return value
  end

  local recording = (argv and argv[1] and argv[1] ~= "" and argv[1]) or variable("callpipe_asr_recording")
  if not recording then
    log("err", uuid .. ": no recording to transcribe: set callpipe_asr_recording (or pass the path)")
    return
  end
  -- record_post_process_exec_api fires for every recording the channel closes; a call that is
  -- recorded and then reaches voicemail closes two, and must not mail the voicemail twice.
  if variable(HANDED_OFF_VARIABLE) == recording then
    log("debug", uuid .. ": " .. recording .. " was already handed off")
    return
  end
  local handle = io.open(recording, "rb")
  if not handle then
    log("notice", uuid .. ": no recording at " .. recording .. " (the caller may have hung up first); nothing to do")
    return
  end
  local size = handle:seek("end")
  handle:close()
  if not size or size == 0 then
    log("notice", uuid .. ": the recording " .. recording .. " is empty; nothing to do")
    return
  end
  if SCRIPT_PATH:find("[%s'\"\\]") then
    -- FreeSWITCH splits the bgapi command at spaces and cannot be told otherwise.
    log("err", "install voicemail_transcribe.lua under a path without spaces or quotes, not " .. SCRIPT_PATH)
    return
  end

  local args = {
    text.percent_encode(recording),
    text.percent_encode(uuid),
    text.percent_encode(variable("callpipe_asr_domain") or variable("domain_name") or "-"),
    text.percent_encode(variable("callpipe_asr_extension") or variable("dialed_extension") or "-"),
  }
  local function option(name, value)
    if value ~= nil then
      args[#args + 1] = name .. "=" .. text.percent_encode(value)
    end
  end
  option("caller_id_name", variable("caller_id_name"))
  option("caller_id_number", variable("caller_id_number"))
  option("received", variable("start_epoch") or tostring(os.time()))
  -- Channel-level settings travel with the job (the background job has no channel to read).
  -- getVariable also answers with global variables; those the job reads itself.
  for _, name in ipairs(config.CALL_SETTINGS) do
    local full = config.VARIABLE_PREFIX .. name
    local value = variable(full)
    if value ~= nil and value ~= global(full) then
      option(name, value)
    end
  end

  local command = "bgapi lua " .. SCRIPT_PATH .. " " .. table.concat(args, " ")
  local answer = api:executeString(command) or ""
  channel:setVariable(HANDED_OFF_VARIABLE, recording)
  log("info", string.format("%s: %s handed to a background job (%s)", uuid, recording,
    (answer:gsub("%s+$", ""))))
end

---------------------------------------------------------------------------------------------
-- Without a channel: transcribe and deliver.
---------------------------------------------------------------------------------------------

local function parse_arguments(args)
  local positional, options = {}, {}
  for i = 1, #args do
    local raw = tostring(args[i])
    local name, value = raw:match("^([%a_][%w_]*)=(.*)$")
    if name then
      options[name] = text.percent_decode(value)
    else
      local decoded = text.percent_decode(raw)
      positional[#positional + 1] = (decoded ~= "-" and decoded ~= "") and decoded or false
    end
  end
  return positional, options
end

local function u32le(data, i)
  local a, b, c, d = data:byte(i, i + 3)
  if not d then
    return nil
  end
  return a + b * 256 + c * 65536 + d * 16777216
end

--- Seconds of audio in a RIFF/WAVE file (what FreeSWITCH records by default), from its header:
-- walk the chunks to "fmt " (byte rate) and "data" (length). nil for anything else.
local function wav_seconds(head, size)
  if head:sub(1, 4) ~= "RIFF" or head:sub(9, 12) ~= "WAVE" then
    return nil
  end
  local pos, byte_rate = 13, nil
  while pos + 7 <= #head do
    local id, length = head:sub(pos, pos + 3), u32le(head, pos + 4)
    if not length then
      return nil
    end
    if id == "fmt " then
      byte_rate = u32le(head, pos + 16)
    elseif id == "data" then
      if not byte_rate or byte_rate == 0 then
        return nil
      end
      local available = size - (pos + 7)
      if length == 0 or length > available then
        length = available -- a header never finalised (recording cut short): use the file size
      end
      return length / byte_rate
    end
    pos = pos + 8 + length + length % 2
  end
  return nil
end

local function recording_info(path)
  local handle = io.open(path, "rb")
  if not handle then
    return nil
  end
  local size = handle:seek("end")
  handle:seek("set", 0)
  local head = handle:read(4096)
  handle:close()
  if not size or not head then
    return nil -- a directory, or unreadable
  end
  return { size = size, seconds = wav_seconds(head, size) }
end

local function format_duration(seconds)
  if not seconds then
    return "unknown length"
  end
  seconds = math.floor(seconds + 0.5)
  if seconds < 60 then
    return string.format("%d s", seconds)
  end
  return string.format("%d min %02d s", math.floor(seconds / 60), seconds % 60)
end

--- <recording without its extension>.txt: where FusionPBX-style templates and admins look.
local function sidecar_path(recording)
  local stem = recording:match("^(.*)%.[^./]*$") or recording
  return stem .. ".txt"
end

local function deliver_file(job, result, say)
  if not result.ok then
    say("info", "no transcript file written (transcription unavailable)")
    return
  end
  local target = sidecar_path(job.recording)
  if target == job.recording then
    say("err", "not writing the transcript over the recording itself: " .. target)
    return
  end
  -- Write a temporary file and rename it, so a reader never sees half a transcript.
  local partial = target .. ".partial"
  local handle, problem = io.open(partial, "wb")
  if not handle then
    say("err", "cannot write the transcript file: " .. tostring(problem))
    return
  end
  handle:write(result.text, "\n")
  handle:close()
  local renamed, rename_problem = os.rename(partial, target)
  if not renamed then
    os.remove(partial)
    say("err", "cannot write the transcript file: " .. tostring(rename_problem))
    return
  end
  say("info", "transcript written to " .. target)
end

--- uuid_setvar reads its value through FreeSWITCH's argument parser, which strips quotes and
-- backslashes; a backslash before each keeps the text as it is.
local function api_value(value)
  return (value:gsub("[\\'\"]", "\\%0"))
end

local function deliver_variable(job, result, say)
  if not valid_uuid(job.uuid) then
    return
  end
  local values = {
    { VARIABLE_TRANSCRIPT .. "_status", result.ok and "done" or "unavailable" },
    { VARIABLE_TRANSCRIPT, result.ok and result.text or "" },
    { VARIABLE_TRANSCRIPT .. "_error", result.ok and "" or result.reason },
  }
  for _, pair in ipairs(values) do
    local answer = api:execute("uuid_setvar", job.uuid .. " " .. pair[1] .. " "
      .. api_value(text.clean_body_text(pair[2]))) or ""
    if not answer:match("^%+OK") then
      say("debug", "call is gone, transcript not set on it (" .. (answer:gsub("%s+$", "")) .. ")")
      return
    end
  end
  say("info", "transcript set on the call as " .. VARIABLE_TRANSCRIPT)
end

local function recipients(job, cfg, say)
  local listed = cfg.email_to
  if not listed and valid_extension(job.extension) and valid_domain(job.domain) then
    -- mod_voicemail's per-user setting, from the directory.
    listed = api:execute("user_data", job.extension .. "@" .. job.domain .. " param vm-mailto")
  end
  local found = {}
  for address in tostring(listed or ""):gmatch("[^,]+") do
    address = address:match("^%s*(.-)%s*$")
    if text.is_email(address) then
      found[#found + 1] = address
    elseif address ~= "" and not address:match("^%-ERR") then
      say("warning", string.format("not e-mailing %q: not a plain e-mail address", address))
    end
  end
  return found
end

--- The path to attach. freeswitch.email names the attachment after the file and writes that
-- name into a quoted MIME header unescaped, so a name with quotes, control characters or
-- non-ASCII bytes is attached through a copy with a tidy name. Returns path, copy-to-remove.
local function attachment_for(recording)
  local name = basename(recording)
  if #name <= 100 and not name:find('[%c"\\\128-\255]') then
    return recording, nil
  end
  local source = io.open(recording, "rb")
  if not source then
    return nil, nil
  end
  local placeholder = os.tmpname() -- ours alone (mkstemp); the copy sits beside it
  local tidy = name:gsub("[^%w%._%-]", "_"):sub(-80)
  local copy = placeholder .. "-" .. tidy
  local target = io.open(copy, "wb")
  if not target then
    source:close()
    os.remove(placeholder)
    return nil, nil
  end
  while true do
    local block = source:read(65536)
    if not block then
      break
    end
    target:write(block)
  end
  source:close()
  target:close()
  return copy, { copy, placeholder }
end

local function deliver_email(job, result, cfg, info, say)
  local to = recipients(job, cfg, say)
  if #to == 0 then
    say("notice", "no e-mail address (callpipe_asr_email_to or the mailbox's vm-mailto); no e-mail sent")
    return
  end
  local from = cfg.email_from or (valid_domain(job.domain) and ("voicemail@" .. job.domain)) or "voicemail@localhost"
  if not text.is_email(from) then
    say("warning", string.format("email_from %q is not a plain e-mail address; using voicemail@localhost", from))
    from = "voicemail@localhost"
  end

  local message_text
  if result.ok then
    message_text = result.text:match("^%s*(.-)%s*$")
    if message_text == "" then
      message_text = NO_SPEECH_LINE
    end
  else
    message_text = string.format(UNAVAILABLE_LINE, result.reason)
  end
  local values = {
    caller_id_name = job.caller_id_name or "unknown caller",
    caller_id_number = job.caller_id_number or "unknown number",
    extension = job.extension or "",
    domain_name = job.domain or "",
    message_date = os.date("%Y-%m-%d %H:%M:%S", job.received),
    message_duration = format_duration(result.duration or info.seconds),
    message_text = message_text,
    transcription_status = result.ok and "done" or "unavailable",
    recording_name = basename(job.recording),
    uuid = job.uuid or "",
  }
  local template_dir = cfg.template_dir or (SCRIPT_DIR .. "/templates")
  local templates = {}
  for kind, fallback in pairs({ txt = FALLBACK_TEXT_TEMPLATE, html = FALLBACK_HTML_TEMPLATE }) do
    local path = template_dir .. "/" .. cfg.template .. "." .. kind
    local content, problem = mail.read_template(path)
    if not content then
      say("err", "e-mail template missing, using the built-in one: " .. tostring(problem))
      content = fallback
    end
    templates[kind] = content
  end

  local file, cleanup = nil, nil
  if cfg.attach then
    file, cleanup = attachment_for(job.recording)
    if not file then
      say("err", "cannot read the recording to attach it; sending the e-mail without it")
    end
  end
  for _, address in ipairs(to) do
    local headers, body = mail.compose({
      to = address,
      from = from,
      subject = cfg.email_subject,
      values = values,
      text_template = templates.txt,
      html_template = templates.html,
      message_id = string.format("callpipe-asr.%s.%d@%s", valid_uuid(job.uuid) and job.uuid or "job",
        os.time(), valid_domain(job.domain) and job.domain or "localhost"),
    })
    if freeswitch.email(address, from, headers, body, file) then
      say("info", "e-mail sent to " .. address .. (result.ok and "" or " (transcription unavailable)"))
    else
      say("err", "e-mail to " .. address .. " failed (see the mailer settings in switch.conf.xml)")
    end
  end
  -- Remove only the temporary copy made above; the recording itself is never touched.
  for _, path in ipairs(cleanup or {}) do
    os.remove(path)
  end
end

local function work(args)
  local positional, options = parse_arguments(args)
  local job = {
    recording = positional[1] or nil,
    uuid = positional[2] or nil,
    domain = positional[3] or nil,
    extension = positional[4] or nil,
    caller_id_name = options.caller_id_name,
    caller_id_number = options.caller_id_number,
    received = tonumber(options.received) or os.time(),
  }
  if not job.recording then
    log("err", "usage: lua voicemail_transcribe.lua <recording> [<uuid> [<domain> [<extension>]]] [name=value ...]")
    reply("-ERR no recording given")
    return
  end
  local label = valid_uuid(job.uuid) and job.uuid or basename(job.recording)
  local function say(level, message)
    log(level, label .. ": " .. message)
  end
  for name, bad in pairs({ uuid = not (job.uuid == nil or valid_uuid(job.uuid)),
    domain = not (job.domain == nil or valid_domain(job.domain)),
    extension = not (job.extension == nil or valid_extension(job.extension)) }) do
    if bad then
      say("warning", string.format("ignoring the %s %q: unexpected characters", name, tostring(job[name])))
      job[name] = nil
    end
  end

  local call = {}
  for name, value in pairs(options) do
    if config.SETTINGS[name] or name == "config" then
      call[name] = value
    elseif name ~= "caller_id_name" and name ~= "caller_id_number" and name ~= "received" then
      say("warning", "ignoring the unknown option " .. name)
    end
  end
  local cfg, problems = config.resolve(call, global)
  for _, problem in ipairs(problems) do
    say("warning", problem)
  end

  local info = recording_info(job.recording)
  if not info then
    say("err", "cannot read the recording " .. job.recording .. "; nothing to transcribe or send")
    reply("-ERR cannot read the recording")
    return
  end
  if info.seconds and info.seconds < cfg.min_seconds then
    say("notice", string.format("%s lasts %.1f s, under min_seconds (%g); left alone", job.recording,
      info.seconds, cfg.min_seconds))
    reply("+OK recording too short, skipped")
    return
  end

  say("info", string.format("transcribing %s (%d bytes) with %s (timeout %g s, JSON: %s)", job.recording,
    info.size, cfg.url, cfg.timeout, json.backend))
  local result = client.transcribe({
    url = cfg.url,
    api_key = cfg.api_key,
    language = cfg.language,
    model = cfg.model,
    timeout = cfg.timeout,
    retries = cfg.retries,
    connect_timeout = cfg.connect_timeout,
    poll_interval = cfg.poll_interval,
    wait = cfg.wait,
    curl = cfg.curl,
    path = job.recording,
    -- The server keeps the name for its pages; send a tidy one, not whatever the path holds.
    filename = (basename(job.recording):gsub("[^%w%._%-]", "_"):sub(-100)),
  }, {
    now_ms = now_ms,
    sleep_ms = function(ms)
      freeswitch.msleep(math.max(0, math.floor(ms)))
    end,
    log = say,
  })
  if result.ok then
    say("notice", string.format("transcribed in %.1f s (job %s, %d characters)", result.elapsed,
      tostring(result.job_id), #result.text))
    say("debug", "transcript: " .. result.text) -- call content: never above DEBUG
  else
    say("err", string.format("transcription unavailable after %.1f s: %s", result.elapsed, result.detail))
  end

  local deliveries = {
    { "file", function() deliver_file(job, result, say) end },
    { "variable", function() deliver_variable(job, result, say) end },
    { "email", function() deliver_email(job, result, cfg, info, say) end },
  }
  for _, delivery in ipairs(deliveries) do
    if cfg.delivery[delivery[1]] then
      -- One failing delivery must not stop the others.
      local ok, problem = pcall(delivery[2])
      if not ok then
        say("err", "delivery by " .. delivery[1] .. " failed: " .. tostring(problem))
      end
    end
  end
  if result.ok then
    reply("+OK transcribed, job " .. tostring(result.job_id))
  else
    reply("-ERR transcription unavailable: " .. result.reason)
  end
end

local ok, problem = xpcall(function()
  if session ~= nil then
    hand_off(session)
  else
    work(argv or {})
  end
end, debug.traceback)
if not ok then
  log("err", "unexpected error: " .. tostring(problem))
  reply("-ERR " .. tostring(problem))
end
