--- Settings: FreeSWITCH variables first, then a small config file, then defaults.
--
-- Each setting NAME is read, in this order, from:
--   1. the call: channel variables `callpipe_asr_NAME` that the hand-off copied onto the
--      background job's command line (see voicemail_transcribe.lua), or `NAME=value` arguments;
--   2. the global variable `callpipe_asr_NAME` (vars.xml: <X-PRE-PROCESS cmd="set" .../>);
--   3. the config file: `<conf_dir>/callpipe_asr.conf.lua` (/etc/freeswitch on packaged
--      installs), or the path in `callpipe_asr_config`; a Lua file that returns a table
--      (`return { url = "http://127.0.0.1:8000", api_key = "..." }`), read in an empty sandbox;
--   4. the defaults below.
-- The API key is the exception: never taken from the call (step 1), because those values
-- travel on a `bgapi` command line, which FreeSWITCH writes to its log.

local M = {}

M.VARIABLE_PREFIX = "callpipe_asr_"
M.DEFAULT_FILE_NAME = "callpipe_asr.conf.lua"

--- Every setting: its default and how it is checked. Units are in the names' comments.
M.SETTINGS = {
  url = { default = "http://127.0.0.1:8000", kind = "url" },         -- base URL of callpipe-asr
  api_key = { default = nil, kind = "secret" },                       -- sent as Bearer token
  language = { default = nil, kind = "pattern", pattern = "^[%a][%a_%-]*$", max = 16 }, -- "en"; unset: the server decides
  model = { default = nil, kind = "pattern", pattern = "^[%w][%w%._%-]*$", max = 100 }, -- a model name the server knows
  timeout = { default = 300, kind = "number", min = 1, max = 86400 }, -- seconds for the whole transcription
  retries = { default = 3, kind = "integer", min = 0, max = 20 },     -- extra attempts per request
  connect_timeout = { default = 5, kind = "number", min = 0.5, max = 120 }, -- seconds per connection
  poll_interval = { default = 2, kind = "number", min = 0.2, max = 60 },  -- seconds between status checks
  wait = { default = 10, kind = "integer", min = 0, max = 30 },       -- seconds the server may hold the upload for the result
  min_seconds = { default = 1, kind = "number", min = 0, max = 3600 }, -- shorter WAV recordings are left alone
  delivery = { default = "email,file,variable", kind = "list", allowed = { email = true, file = true, variable = true } },
  email_to = { default = nil, kind = "string" },    -- comma-separated; unset: the mailbox's vm-mailto
  email_from = { default = nil, kind = "string" },  -- unset: voicemail@<domain>
  email_subject = { default = "Voicemail from ${caller_id_name} <${caller_id_number}> for ${extension}", kind = "string" },
  attach = { default = true, kind = "boolean" },    -- attach the recording to the e-mail
  template = { default = "voicemail_email", kind = "pattern", pattern = "^[%w_%-]+$", max = 100 }, -- <template_dir>/<template>.txt and .html
  template_dir = { default = nil, kind = "string" }, -- unset: templates/ next to the script
  curl = { default = "curl", kind = "string" },     -- the curl binary
}

--- The names a call may set (everything but the key; `config` names the file to read).
M.CALL_SETTINGS = {}
for name, spec in pairs(M.SETTINGS) do
  if spec.kind ~= "secret" then
    M.CALL_SETTINGS[#M.CALL_SETTINGS + 1] = name
  end
end
M.CALL_SETTINGS[#M.CALL_SETTINGS + 1] = "config"
table.sort(M.CALL_SETTINGS)

local function check(name, raw)
  local spec = M.SETTINGS[name]
  if type(raw) == "string" then
    raw = raw:match("^%s*(.-)%s*$")
    if raw == "" then
      return nil -- an empty variable means "not set", as with FreeSWITCH's own settings
    end
  end
  if spec.kind == "number" or spec.kind == "integer" then
    local number = tonumber(raw)
    if not number or number ~= number or number < spec.min or number > spec.max
      or (spec.kind == "integer" and number % 1 ~= 0) then
      return nil, string.format("%s must be a%s between %g and %g, not %q", name,
        spec.kind == "integer" and " whole number" or " number", spec.min, spec.max, tostring(raw))
    end
    return number
  elseif spec.kind == "boolean" then
    local value = tostring(raw):lower()
    if value == "true" or value == "yes" or value == "1" or value == "on" then
      return true
    elseif value == "false" or value == "no" or value == "0" or value == "off" then
      return false
    end
    return nil, string.format("%s must be true or false, not %q", name, tostring(raw))
  elseif spec.kind == "url" then
    local value = tostring(raw)
    if not value:match("^https?://[^%s/]+") or value:find("[%c%s]") then
      return nil, string.format("%s must be an http:// or https:// URL, not %q", name, value)
    end
    return value
  elseif spec.kind == "pattern" then
    local value = tostring(raw)
    if #value > spec.max or not value:match(spec.pattern) then
      return nil, string.format("%s: %q is not valid", name, value)
    end
    return value
  elseif spec.kind == "list" then
    local items = {}
    for item in tostring(raw):gmatch("[^,%s]+") do
      if not spec.allowed[item] then
        return nil, string.format("%s: unknown item %q", name, item)
      end
      items[item] = true
    end
    return items
  end
  return tostring(raw) -- string, secret
end

--- Read the config file in an empty environment: it may assign globals or return a table.
-- Returns the table (empty when the file does not exist) and a problem message or nil.
function M.read_file(path)
  local handle = io.open(path, "r")
  if not handle then
    return {}, nil
  end
  handle:close()
  local sandbox = {}
  local chunk, problem = loadfile(path, "t", sandbox)
  if not chunk then
    return {}, "config file " .. path .. ": " .. tostring(problem)
  end
  local ok, returned = pcall(chunk)
  if not ok then
    return {}, "config file " .. path .. ": " .. tostring(returned)
  end
  if type(returned) == "table" then
    return returned, nil
  end
  return sandbox, nil
end

--- Resolve every setting.
-- call:    table of values from the call (strings), may be empty
-- globals: function(name) -> global variable value or nil
-- Returns settings (a table) and a list of problems (strings) worth a warning.
function M.resolve(call, globals)
  local problems = {}
  if call.api_key ~= nil then
    problems[#problems + 1] = "api_key from the call is ignored: set callpipe_asr_api_key globally or in the config file"
  end
  local conf_dir = globals("conf_dir")
  local path = call.config or globals(M.VARIABLE_PREFIX .. "config")
    or ((conf_dir and conf_dir ~= "" and conf_dir or "/etc/freeswitch") .. "/" .. M.DEFAULT_FILE_NAME)
  local file, file_problem = M.read_file(path)
  if file_problem then
    problems[#problems + 1] = file_problem
  end
  for key in pairs(file) do
    if type(key) ~= "string" or not M.SETTINGS[key] then
      problems[#problems + 1] = string.format("config file %s: unknown setting %s", path, tostring(key))
    end
  end

  local settings = { config_file = path }
  for name, spec in pairs(M.SETTINGS) do
    local sources = {
      { spec.kind ~= "secret" and call[name] or nil, "call" },
      { globals(M.VARIABLE_PREFIX .. name), "global variable " .. M.VARIABLE_PREFIX .. name },
      { file[name], "config file" },
    }
    local value
    for _, source in ipairs(sources) do
      if source[1] ~= nil then
        local checked, problem = check(name, source[1])
        if problem then
          problems[#problems + 1] = problem .. " (" .. source[2] .. "; ignored)"
        elseif checked ~= nil then
          value = checked
          break
        end
      end
    end
    if value == nil and spec.default ~= nil then
      value = check(name, spec.default)
    end
    settings[name] = value
  end
  return settings, problems
end

return M
