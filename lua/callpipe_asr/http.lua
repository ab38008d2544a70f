--- One HTTP request through the curl binary.
--
-- mod_lua has no HTTP client of its own; mod_curl's `curl_sendfile` cannot send extra form
-- fields as plain strings or a header from a file, and LuaSocket is rarely installed on a PBX.
-- The curl binary is on every FreeSWITCH host and FusionPBX already shells out to it.
--
-- The command is built so that no value can change its meaning:
--   * every argument goes through text.shell_quote (single quotes), including the URL;
--   * form values are sent with --form-string (curl reads no '@file' or '<file' from them);
--   * the file path and its multipart name are double-quoted in curl's -F syntax;
--   * the API key is written to a private temporary file read with `-H @file`, so it never
--     appears on a command line (visible to every local user in `ps`);
--   * --proto limits the URL to http/https, and redirects are not followed.

local text = require("callpipe_asr.text")

local M = {}

--- curl exit codes where a later attempt may succeed: the name did not resolve, the connection
-- was refused or reset, the server did not answer in time or closed without an answer.
M.TRANSIENT_EXIT_CODES = {
  [5] = "could not resolve the proxy",
  [6] = "could not resolve the host",
  [7] = "could not connect",
  [28] = "timed out",
  [35] = "TLS handshake failed",
  [52] = "empty reply from the server",
  [55] = "failed sending data",
  [56] = "failed receiving data",
}

local function read_all(path)
  local handle = io.open(path, "rb")
  if not handle then
    return ""
  end
  local data = handle:read("*a") or ""
  handle:close()
  return data
end

--- Seconds for curl's timeout options, always with a '.' (a "%f" format would follow the
-- process locale, and a German FreeSWITCH would write "2,500").
local function seconds(value)
  local millis = math.floor(math.max(0.1, value) * 1000 + 0.5)
  return string.format("%d.%03d", math.floor(millis / 1000), millis % 1000)
end

--- Headers of the final response in a --dump-header file (a "100 Continue" block may come
-- first). Names are lower-cased.
local function parse_headers(raw)
  local headers, status = {}, nil
  for line in raw:gmatch("[^\r\n]+") do
    local code = line:match("^HTTP/%S+%s+(%d%d%d)")
    if code then
      headers, status = {}, tonumber(code)
    else
      local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
      if name then
        headers[name:lower()] = value
      end
    end
  end
  return headers, status
end

--- Perform one request.
-- request = {
--   method = "GET" | "POST",
--   url = "http://...",
--   api_key = string or nil,            -- sent as "Authorization: Bearer <key>"
--   fields = { {name, value}, ... },    -- multipart text fields (POST)
--   file = { field = "file", path = "/x/msg.wav", filename = "msg.wav" } or nil,
--   connect_timeout = seconds, max_time = seconds,
--   curl = "curl",                      -- the binary
-- }
-- Returns { status = HTTP status or nil, headers = {}, body = string,
--           exit_code = curl's exit status, error = curl's message or nil }.
function M.request(request)
  local temporary = {}
  local function temp_path()
    local path = os.tmpname() -- created empty with mode 0600 (mkstemp)
    temporary[#temporary + 1] = path
    return path
  end

  local ok, result = pcall(function()
    local body_path, header_path, error_path = temp_path(), temp_path(), temp_path()
    local args = {
      request.curl or "curl", "--silent", "--show-error", "--globoff",
      "--proto", "=http,https", "--max-redirs", "0",
      "--connect-timeout", seconds(request.connect_timeout or 5),
      "--max-time", seconds(request.max_time or 30),
      "--output", body_path, "--dump-header", header_path,
      "--write-out", "%{http_code}",
      "--user-agent", "callpipe-asr-freeswitch-lua/1",
      -- No "Expect: 100-continue": curl would wait a second for a reply our server never needs.
      "--header", "Expect:",
    }
    if request.method and request.method ~= "GET" and request.method ~= "POST" then
      args[#args + 1] = "--request"
      args[#args + 1] = request.method
    end
    if request.api_key and request.api_key ~= "" then
      local auth_path = temp_path()
      local handle = assert(io.open(auth_path, "wb"))
      handle:write("Authorization: Bearer ", (request.api_key:gsub("[\r\n]", "")), "\n")
      handle:close()
      args[#args + 1] = "--header"
      args[#args + 1] = "@" .. auth_path
    end
    for _, field in ipairs(request.fields or {}) do
      args[#args + 1] = "--form-string"
      args[#args + 1] = field[1] .. "=" .. tostring(field[2])
    end
    if request.file then
      args[#args + 1] = "--form"
      args[#args + 1] = request.file.field .. "=@" .. text.curl_form_quote(request.file.path)
        .. ";filename=" .. text.curl_form_quote(request.file.filename)
    end
    args[#args + 1] = "--url"
    args[#args + 1] = request.url

    local words = {}
    for i, arg in ipairs(args) do
      words[i] = text.shell_quote(arg)
    end
    local command = table.concat(words, " ") .. " 2>" .. text.shell_quote(error_path)

    local pipe = assert(io.popen(command, "r"))
    local written = pipe:read("*a") or ""
    local _, how, code = pipe:close()
    local exit_code = (how == "exit") and code or -1

    local headers, header_status = parse_headers(read_all(header_path))
    local status = tonumber(written:match("(%d%d%d)%s*$"))
    if status == 0 then
      status = nil -- curl prints 000 when no response arrived
    end
    local message = read_all(error_path):gsub("%s+$", "")
    return {
      status = status or header_status,
      headers = headers,
      body = read_all(body_path),
      exit_code = exit_code,
      error = (exit_code ~= 0) and (message ~= "" and message or ("curl exited with " .. tostring(code))) or nil,
    }
  end)

  -- Only the temporary files made above are removed; nothing else is ever deleted.
  for _, path in ipairs(temporary) do
    os.remove(path)
  end
  if not ok then
    return { status = nil, headers = {}, body = "", exit_code = -1, error = tostring(result) }
  end
  return result
end

return M
