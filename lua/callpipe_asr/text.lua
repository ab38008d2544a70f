--- Escaping and encoding for every place text leaves the script.
--
-- Caller ids come from the network (a SIP From header is whatever the caller's phone says),
-- file names from the dialplan, transcripts from a speech model. None of them is trusted, so
-- each destination gets its own function here: the shell, curl's form syntax, FreeSWITCH API
-- arguments, e-mail headers, HTML, quoted-printable bodies.
--
-- Plain Lua 5.2/5.3 (no bit operators, no utf8 library): FreeSWITCH builds use either.

local M = {}

local floor = math.floor

--- A value as one shell word: wrapped in single quotes, each ' written as '\''.
-- Inside single quotes the shell expands nothing ($(...), `...`, $VAR, ;, &, | are all plain
-- characters), so this is safe for any string without a NUL byte (the shell could not receive
-- one; the command line would be cut there).
function M.shell_quote(value)
  value = tostring(value)
  if value:find("\0", 1, true) then
    error("refusing to pass a NUL byte to the shell", 2)
  end
  return "'" .. value:gsub("'", "'\\''") .. "'"
end

--- A value for curl's -F syntax (`name=@"path";filename="name"`): curl splits unquoted values
-- at ';' and ',' and reads '@'/'<' as file references, so paths and names are double-quoted,
-- with '"' and '\' escaped by a backslash (curl's own rule for quoted -F values).
function M.curl_form_quote(value)
  return '"' .. tostring(value):gsub('[\\"]', "\\%0") .. '"'
end

--- Percent-encoding for arguments on a FreeSWITCH API command line (`bgapi lua script args`).
-- FreeSWITCH splits those arguments at spaces, strips and interprets quotes and backslashes,
-- then pastes each into generated Lua source; an encoded argument holds none of those
-- characters, so it arrives byte for byte. '=' is encoded too: the script reads `key=value`
-- arguments as options.
function M.percent_encode(value)
  return (tostring(value):gsub("[^%w%._~/%-]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

function M.percent_decode(value)
  return (tostring(value):gsub("%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

local HTML_ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

--- Text for an HTML element or a quoted attribute value.
function M.html_escape(value)
  return (tostring(value):gsub("[&<>\"']", HTML_ENTITIES))
end

local REPLACEMENT_CHARACTER = "\239\191\189" -- U+FFFD

--- The string with every byte that is not part of a well-formed UTF-8 sequence replaced by
-- U+FFFD. SIP display names are often Latin-1; an e-mail part declared UTF-8 must be UTF-8.
function M.utf8_clean(value)
  value = tostring(value)
  if not value:find("[\128-\255]") then
    return value
  end
  local out, i, n = {}, 1, #value
  while i <= n do
    local c = value:byte(i)
    local length, low, high = 0, nil, nil
    if c < 0x80 then
      length = 1
    elseif c >= 0xC2 and c <= 0xDF then
      length = 2
    elseif c >= 0xE0 and c <= 0xEF then
      length = 3
      -- no overlong forms (E0 A0..), no UTF-16 surrogates (ED 80..9F)
      low, high = (c == 0xE0) and 0xA0 or 0x80, (c == 0xED) and 0x9F or 0xBF
    elseif c >= 0xF0 and c <= 0xF4 then
      length = 4
      low, high = (c == 0xF0) and 0x90 or 0x80, (c == 0xF4) and 0x8F or 0xBF
    end
    local valid = length > 0 and i + length - 1 <= n
    for k = 1, length - 1 do
      if not valid then
        break
      end
      local b = value:byte(i + k)
      local lo, hi = 0x80, 0xBF
      if k == 1 and low then
        lo, hi = low, high
      end
      valid = b >= lo and b <= hi
    end
    if valid then
      out[#out + 1] = value:sub(i, i + length - 1)
      i = i + length
    else
      out[#out + 1] = REPLACEMENT_CHARACTER
      i = i + 1
    end
  end
  return table.concat(out)
end

--- Body text: valid UTF-8, line breaks as "\n", no other control characters (a stray ESC or
-- NUL from a SIP header has no business in an e-mail).
function M.clean_body_text(value)
  value = M.utf8_clean(value):gsub("\r\n?", "\n")
  return (value:gsub("[\0-\8\11\12\14-\31\127]", ""))
end

--- One line of header text: valid UTF-8, every control character (CR and LF above all, which
-- would start a new header) turned into a space, runs of spaces collapsed, at most max_bytes
-- bytes, cut on a character boundary.
function M.header_text(value, max_bytes)
  value = M.utf8_clean(value or ""):gsub("[\0-\31\127]", " "):gsub("%s+", " ")
  value = value:match("^%s*(.-)%s*$")
  max_bytes = max_bytes or 200
  if #value > max_bytes then
    local cut = max_bytes
    -- step back over continuation bytes so no character is split
    while cut > 0 and value:byte(cut + 1) and value:byte(cut + 1) >= 0x80 and value:byte(cut + 1) < 0xC0 do
      cut = cut - 1
    end
    value = value:sub(1, cut)
  end
  return value
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function M.base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local s1, s2, s3, s4 = floor(n / 262144), floor(n / 4096) % 64, floor(n / 64) % 64, n % 64
    out[#out + 1] = B64:sub(s1 + 1, s1 + 1) .. B64:sub(s2 + 1, s2 + 1)
      .. (b and B64:sub(s3 + 1, s3 + 1) or "=") .. (c and B64:sub(s4 + 1, s4 + 1) or "=")
  end
  return table.concat(out)
end

--- A header value: as it is when it is printable ASCII, else RFC 2047 encoded words
-- (=?UTF-8?B?...?=), each under the 75-character limit, folded onto continuation lines.
function M.encode_header(value)
  value = M.header_text(value, 900)
  if not value:find("[^ -~]") and not value:find("=?", 1, true) then
    return value
  end
  local words, i = {}, 1
  while i <= #value do
    -- 36 bytes -> 48 base64 characters + 12 of wrapping: the first line, after "Subject: ",
    -- stays within 76 characters
    local j = math.min(i + 35, #value)
    while j < #value and value:byte(j + 1) >= 0x80 and value:byte(j + 1) < 0xC0 do
      j = j - 1 -- never split a UTF-8 sequence between two encoded words
    end
    words[#words + 1] = "=?UTF-8?B?" .. M.base64(value:sub(i, j)) .. "?="
    i = j + 1
  end
  return table.concat(words, "\n ")
end

--- Quoted-printable (RFC 2045) for a text body with "\n" line breaks: '=' and every byte
-- outside printable ASCII escaped, trailing blanks escaped, soft breaks keep lines at 76
-- characters. E-mail lines have a hard limit (998), and a transcript is often one long line.
function M.quoted_printable(value)
  local lines = {}
  for line in (value .. "\n"):gmatch("([^\n]*)\n") do
    local encoded = line:gsub("[^\t -<>-~]", function(c)
      return string.format("=%02X", c:byte())
    end):gsub("[\t ]$", function(c)
      return string.format("=%02X", c:byte())
    end)
    while #encoded > 76 do
      local cut = 75
      if encoded:sub(cut, cut) == "=" then
        cut = cut - 1 -- an escape starts at 75: break before it
      elseif encoded:sub(cut - 1, cut - 1) == "=" then
        cut = cut - 2 -- an escape starts at 74: break before it
      end
      lines[#lines + 1] = encoded:sub(1, cut) .. "="
      encoded = encoded:sub(cut + 1)
    end
    lines[#lines + 1] = encoded
  end
  if lines[#lines] == "" then
    lines[#lines] = nil
  end
  return table.concat(lines, "\n")
end

--- A plain mailbox address, strict on purpose: it ends up as an argument of the system's
-- sendmail (FreeSWITCH builds before 1.10.8 paste it into a shell command unquoted), so only
-- characters that are harmless there are accepted; a leading '-' could be read as an option.
function M.is_email(value)
  return type(value) == "string" and #value <= 254
    and value:match("^[%w_][%w%._%+%-=]*@[%w][%w%.%-]*$") ~= nil
    and not value:find("..", 1, true)
end

--- `${name}` placeholders filled in one pass: a value that itself contains `${...}` is not
-- expanded again. `escape` turns each value into the target syntax (HTML, plain text).
-- Unknown names stay as they are, so a typo in a template shows up in the e-mail.
function M.render(template, values, escape)
  return (template:gsub("%${([%w_]+)}", function(name)
    local value = values[name]
    if value == nil then
      return nil
    end
    return escape(tostring(value))
  end))
end

return M
