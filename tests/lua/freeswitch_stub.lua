--[[
A stand-in for the FreeSWITCH host that mod_lua gives a script, for the tests: it runs one
script the way mod_lua does (globals `freeswitch`, `session`, `stream`, `argv`; os.exit
disabled) and records what the script asked of FreeSWITCH, one JSON object per line.

    lua5.3 freeswitch_stub.lua SPEC.json

SPEC = {
  "script": path, "argv": [strings],
  "globals": {name: value},                  -- freeswitch.getGlobalVariable
  "session": {"uuid", "variables": {}} | null, -- present: the script runs "in a call"
  "channels": [uuid, ...],                   -- calls still up (uuid_setvar succeeds on them)
  "directory": {"user@domain": {"vm-mailto": "..."}},  -- user_data ... param vm-mailto
  "smtp": {"host", "port"} | null,           -- where freeswitch.email delivers
  "record": path,                            -- JSON lines written here
  "hide_cjson": bool                         -- make `require "cjson"` fail for the script
}

Faithful where it matters to the script under test:
  * freeswitch.email builds the message the way switch_simple_email does (its own
    multipart/mixed wrapper, our headers, our body, the file as a base64 part named after
    the file) and really delivers it over SMTP with curl, to the test's aiosmtpd sink;
  * API arguments are split and unquoted with a port of switch_separate_string (quotes and
    backslashes are interpreted), for `bgapi lua ...` and `uuid_setvar`;
  * getVariable on a session falls back to global variables, as switch_channel_get_variable does.
]]

local cjson = require("cjson")

local spec_path = assert(arg[1], "usage: freeswitch_stub.lua SPEC.json")
local spec_file = assert(io.open(spec_path, "rb"))
local spec = cjson.decode(spec_file:read("*a"))
spec_file:close()

local function present(value)
  return value ~= nil and value ~= cjson.null
end

local record_file = assert(io.open(spec.record, "ab"))
local function record(event)
  record_file:write(cjson.encode(event), "\n")
  record_file:flush()
end

local function shell_quote(value)
  return "'" .. tostring(value):gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------------------------------------
-- switch_separate_string(buf, ' ', array, arraylen), ported from switch_utils.c
---------------------------------------------------------------------------------------------

local UNESCAPE = { n = "\n", r = "\r", t = "\t", s = " " }

local function cleanup_separated_string(str)
  local i, n = 1, #str
  while str:sub(i, i) == " " do
    i = i + 1
  end
  local out, last, inside = {}, nil, false
  while i <= n do
    local c = str:sub(i, i)
    local escaped = false
    if c == "\\" then
      local e = str:sub(i + 1, i + 1)
      if e == "'" or e == '"' or e == " " or e == "\\" or UNESCAPE[e] then
        i = i + 1
        out[#out + 1] = UNESCAPE[e] or e
        last = #out
        escaped = true
      end
    end
    if not escaped then
      if c == "'" and (inside or str:find("'", i + 1, true)) then
        inside = not inside
        if inside then
          last = #out
        end
      else
        out[#out + 1] = c
        if c ~= " " or inside then
          last = #out
        end
      end
    end
    i = i + 1
  end
  if last == nil then
    return table.concat(out)
  end
  return table.concat(out, "", 1, last)
end

local function separate_string(buf, arraylen)
  local starts, cuts = {}, {}
  local state, count, i, inside = "start", 0, 1, false
  while i <= #buf and count < arraylen do
    local c = buf:sub(i, i)
    if state == "start" then
      count = count + 1
      starts[count] = i
      state = "skip_initial"
    elseif state == "skip_initial" then
      if c == " " then
        i = i + 1
      else
        state = "find"
      end
    elseif state == "find" then
      if c == "\\" then
        i = i + 1
      elseif c == "'" then
        inside = not inside
      elseif c == " " and not inside then
        cuts[#cuts + 1] = i
        state = "skip_end"
      end
      i = i + 1
    else -- skip_end
      if c == " " then
        i = i + 1
      else
        state = "start"
      end
    end
  end
  local tokens = {}
  for k, first in ipairs(starts) do
    local stop = #buf
    for _, cut in ipairs(cuts) do
      if cut >= first then
        stop = cut - 1
        break
      end
    end
    tokens[k] = cleanup_separated_string(buf:sub(first, stop))
  end
  return tokens
end

---------------------------------------------------------------------------------------------
-- freeswitch.*
---------------------------------------------------------------------------------------------

local globals = present(spec.globals) and spec.globals or {}
local live = {}
for _, uuid in ipairs(present(spec.channels) and spec.channels or {}) do
  live[uuid] = {}
end

local function global_variable(name)
  local value = globals[name]
  if present(value) then
    return tostring(value)
  end
  return nil
end

local function now_ms()
  local pipe = io.popen("date +%s%3N")
  local value = pipe:read("*a")
  pipe:close()
  return value:match("%d+")
end

local function api_execute(command, args)
  args = args or ""
  local answer
  if command == "bgapi" then
    local sub, rest = args:match("^(%S+)%s*(.*)$")
    local event = { type = "bgapi", command = args }
    if sub == "lua" then
      local script, script_args = rest:match("^(%S+)%s*(.*)$")
      event.script = script
      event.argv = script_args ~= "" and separate_string(script_args, 128) or {}
    end
    record(event)
    answer = "+OK Job-UUID: 00000000-0000-0000-0000-000000000001\n"
  elseif command == "uuid_setvar" then
    local parts = separate_string(args, 3)
    if #parts >= 2 and live[parts[1]] then
      live[parts[1]][parts[2]] = parts[3]
      record({ type = "setvar", uuid = parts[1], name = parts[2], value = parts[3] or cjson.null })
      answer = "+OK"
    else
      answer = "-ERR No such channel!\n"
    end
  elseif command == "user_data" then
    local who, kind, name = args:match("^(%S+)%s+(%S+)%s+(%S+)$")
    local entry = present(spec.directory) and spec.directory[who or ""]
    answer = (kind == "param" and entry and present(entry[name])) and entry[name] or ""
  else
    answer = "-ERR " .. command .. " Command not found!\n"
  end
  record({ type = "api", command = command, args = args, answer = answer })
  return answer
end

local API = {}
API.__index = API
function API:execute(command, args)
  return api_execute(command, args)
end
function API:executeString(line)
  local command, args = line:match("^(%S+)%s*(.*)$")
  return api_execute(command, args)
end
function API:getTime()
  return now_ms()
end

local MIME_TYPES = { wav = "audio/x-wav", mp3 = "audio/mpeg", ogg = "audio/ogg", gsm = "audio/x-gsm" }
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64_lines(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local s = { math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    out[#out + 1] = B64:sub(s[1] + 1, s[1] + 1) .. B64:sub(s[2] + 1, s[2] + 1)
      .. (b and B64:sub(s[3] + 1, s[3] + 1) or "=") .. (c and B64:sub(s[4] + 1, s[4] + 1) or "=")
  end
  local joined = table.concat(out)
  local lines = {}
  for k = 1, #joined, 72 do
    lines[#lines + 1] = joined:sub(k, k + 71)
  end
  return table.concat(lines, "\n")
end

--- switch_simple_email, minus the sendmail pipe: the same message, delivered over SMTP.
local function email(to, from, headers, body, file, convert_cmd, convert_ext)
  local event = { type = "email", to = to, from = from, headers = headers, body = body,
    file = file or cjson.null, sent = false }
  local bound = "XXXX_boundary_XXXX"
  local parts = { 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="' .. bound .. '"\n' }
  parts[#parts + 1] = headers or ""
  parts[#parts + 1] = "\n\n"
  if body and body:lower():find("content-type", 1, true) then
    parts[#parts + 1] = "--" .. bound .. "\n"
  else
    parts[#parts + 1] = "--" .. bound .. "\nContent-Type: text/plain\n\n"
  end
  parts[#parts + 1] = body or ""
  if file then
    local handle = io.open(file, "rb")
    if not handle then
      event.error = "Cannot open tmp file"
      record(event)
      return false
    end
    local data = handle:read("*a")
    handle:close()
    local stripped = file:match("([^/]*)$")
    local mime = MIME_TYPES[(stripped:match("%.([^.]*)$") or ""):lower()] or "audio/inline"
    parts[#parts + 1] = "\n\n--" .. bound .. "\nContent-Type: " .. mime .. '; name="' .. stripped .. '"\n'
      .. "Content-ID: <ATTACHED@freeswitch.org>\nContent-Transfer-Encoding: base64\n"
      .. "Content-Description: Sound attachment.\n"
      .. 'Content-Disposition: attachment; filename="' .. stripped .. '"\n\n' .. base64_lines(data)
  end
  -- FreeSWITCH ends with "\n.\n" for sendmail; over SMTP curl ends the data itself.
  parts[#parts + 1] = "\n\n--" .. bound .. "--\n"

  if not present(spec.smtp) then
    event.error = "no mailer configured"
    record(event)
    return false
  end
  local message_path = os.tmpname()
  local handle = assert(io.open(message_path, "wb"))
  handle:write(table.concat(parts))
  handle:close()
  local command = table.concat({
    "curl", "--silent", "--show-error", "--crlf",
    "--url", shell_quote(string.format("smtp://%s:%d", spec.smtp.host, spec.smtp.port)),
    "--mail-from", shell_quote(from), "--mail-rcpt", shell_quote(to),
    "--upload-file", shell_quote(message_path),
  }, " ") .. " 2>&1"
  local pipe = io.popen(command, "r")
  local output = pipe:read("*a")
  local _, _, code = pipe:close()
  os.remove(message_path)
  event.sent = (code == 0)
  event.curl_output = output
  record(event)
  return event.sent
end

freeswitch = {
  consoleLog = function(level, message)
    record({ type = "log", level = level, message = message })
    io.stderr:write("[", tostring(level), "] ", tostring(message))
  end,
  consoleCleanLog = function(message)
    record({ type = "log", level = "clean", message = message })
  end,
  API = function()
    return setmetatable({}, API)
  end,
  getGlobalVariable = global_variable,
  setGlobalVariable = function(name, value)
    globals[name] = value
    record({ type = "global_setvar", name = name, value = value })
  end,
  email = email,
  msleep = function(ms)
    record({ type = "sleep", ms = ms })
    os.execute("sleep " .. string.format("%.3f", ms / 1000))
  end,
}

if present(spec.session) then
  local variables = present(spec.session.variables) and spec.session.variables or {}
  local Session = {}
  Session.__index = Session
  function Session:get_uuid()
    return spec.session.uuid
  end
  function Session:getVariable(name)
    local value = variables[name]
    if present(value) then
      return tostring(value)
    end
    return global_variable(name)
  end
  function Session:setVariable(name, value)
    variables[name] = value
    record({ type = "session_setvar", name = name, value = value })
  end
  function Session:ready()
    return false -- by the time a recording closes the caller has usually hung up
  end
  session = setmetatable({}, Session)
end

stream = {
  write = function(_, data)
    record({ type = "stream", text = data })
  end,
}

argv = { [0] = spec.script }
for i, value in ipairs(present(spec.argv) and spec.argv or {}) do
  argv[i] = value
end

-- mod_lua replaces os.exit so that a script cannot stop FreeSWITCH.
os.exit = function()
  freeswitch.consoleLog("err", "Surely you jest! exiting is a bad plan....\n")
end

if spec.hide_cjson then
  package.loaded.cjson = nil
  package.preload.cjson = function()
    error("module 'cjson' not found (hidden by the test)")
  end
end

local ok, problem = xpcall(function()
  dofile(spec.script)
end, debug.traceback)
if not ok then
  record({ type = "lua_error", message = tostring(problem) })
end
record({ type = "done" })
record_file:close()
