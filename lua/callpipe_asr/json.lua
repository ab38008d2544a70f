--- JSON decoding: lua-cjson when it loads, else the small decoder below.
--
-- Why a bundled decoder: FreeSWITCH packages do not depend on lua-cjson, mod_lua is built for
-- one Lua version (5.2 or 5.3) whose C modules must match it, and FusionPBX ships its own
-- pure-Lua JSON rather than a C one. The script only reads the server's job documents, so the
-- fallback is a plain recursive-descent decoder of the whole grammar (strings with \u escapes
-- and surrogate pairs, numbers, nesting); it is complete rather than "the fields we need" so
-- that a new field in a server answer can never break it.
--
-- JSON null decodes to M.null (cjson.null or a sentinel of ours), never to nil, so an array
-- keeps its length; use M.value(x) to read a field that may be null.

local M = {}

local loaded, cjson = pcall(require, "cjson")

local function utf8_char(cp)
  local floor = math.floor
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
    0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local BUNDLED_NULL = setmetatable({}, { __tostring = function() return "null" end })

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

--- Decode a JSON text with the bundled decoder. Returns the value, or nil and a message.
function M.decode_bundled(text)
  if type(text) ~= "string" then
    return nil, "not a string"
  end
  local pos = 1

  local function fail(message)
    error({ json_error = message .. " at byte " .. pos }, 0)
  end

  local function skip_space()
    pos = text:find("[^ \t\r\n]", pos) or (#text + 1)
  end

  local parse_value

  local function parse_string()
    local parts, i = {}, pos + 1
    while true do
      local j = text:find('["\\]', i)
      if not j then
        fail("unterminated string")
      end
      parts[#parts + 1] = text:sub(i, j - 1)
      if text:sub(j, j) == '"' then
        pos = j + 1
        return table.concat(parts)
      end
      local escape = text:sub(j + 1, j + 1)
      if escape == "u" then
        local hex = text:match("^%x%x%x%x", j + 2)
        if not hex then
          pos = j
          fail("bad \\u escape")
        end
        local cp = tonumber(hex, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          -- a UTF-16 high surrogate: combine with the low one that must follow
          local low = text:match("^\\u(%x%x%x%x)", i)
          low = low and tonumber(low, 16)
          if low and low >= 0xDC00 and low <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
            i = i + 6
          else
            cp = 0xFFFD
          end
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          cp = 0xFFFD -- a lone low surrogate is not a character
        end
        parts[#parts + 1] = utf8_char(cp)
      elseif ESCAPES[escape] then
        parts[#parts + 1] = ESCAPES[escape]
        i = j + 2
      else
        pos = j
        fail("bad escape")
      end
    end
  end

  local function parse_number()
    local literal = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    local number = literal and tonumber(literal)
    if not number then
      fail("bad number")
    end
    pos = pos + #literal
    return number
  end

  local function parse_array()
    local array = {}
    pos = pos + 1
    skip_space()
    if text:sub(pos, pos) == "]" then
      pos = pos + 1
      return array
    end
    while true do
      array[#array + 1] = parse_value()
      skip_space()
      local c = text:sub(pos, pos)
      pos = pos + 1
      if c == "]" then
        return array
      elseif c ~= "," then
        pos = pos - 1
        fail("expected ',' or ']'")
      end
    end
  end

  local function parse_object()
    local object = {}
    pos = pos + 1
    skip_space()
    if text:sub(pos, pos) == "}" then
      pos = pos + 1
      return object
    end
    while true do
      skip_space()
      if text:sub(pos, pos) ~= '"' then
        fail("expected a string key")
      end
      local key = parse_string()
      skip_space()
      if text:sub(pos, pos) ~= ":" then
        fail("expected ':'")
      end
      pos = pos + 1
      object[key] = parse_value()
      skip_space()
      local c = text:sub(pos, pos)
      pos = pos + 1
      if c == "}" then
        return object
      elseif c ~= "," then
        pos = pos - 1
        fail("expected ',' or '}'")
      end
    end
  end

  local LITERALS = { ["true"] = true, ["false"] = false }

  parse_value = function()
    skip_space()
    local c = text:sub(pos, pos)
    if c == "{" then
      return parse_object()
    elseif c == "[" then
      return parse_array()
    elseif c == '"' then
      return parse_string()
    elseif c == "-" or c:match("%d") then
      return parse_number()
    end
    for word, value in pairs(LITERALS) do
      if text:sub(pos, pos + #word - 1) == word then
        pos = pos + #word
        return value
      end
    end
    if text:sub(pos, pos + 3) == "null" then
      pos = pos + 4
      return BUNDLED_NULL
    end
    fail(c == "" and "unexpected end of input" or "unexpected character")
  end

  local ok, result = pcall(function()
    local value = parse_value()
    skip_space()
    if pos <= #text then
      fail("trailing characters")
    end
    return value
  end)
  if ok then
    return result
  end
  if type(result) == "table" and result.json_error then
    return nil, result.json_error
  end
  return nil, tostring(result)
end

if loaded and type(cjson) == "table" and type(cjson.decode) == "function" then
  M.backend = "lua-cjson"
  M.null = cjson.null
  --- Decode a JSON text. Returns the value, or nil and a message.
  function M.decode(text)
    local ok, value = pcall(cjson.decode, text)
    if ok then
      return value
    end
    return nil, tostring(value)
  end
else
  M.backend = "bundled"
  M.null = BUNDLED_NULL
  M.decode = M.decode_bundled
end

--- A decoded field, with JSON null read as nil.
function M.value(x)
  if x == M.null or x == BUNDLED_NULL then
    return nil
  end
  return x
end

return M
