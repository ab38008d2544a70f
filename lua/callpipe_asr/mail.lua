--- The voicemail e-mail, shaped for freeswitch.email(to, from, headers, body, file).
--
-- freeswitch.email (switch_simple_email) writes "MIME-Version" and a multipart/mixed
-- Content-Type itself, then our `headers`, a blank line, its own boundary, then our `body`,
-- and finally the recording as a base64 part. When the body contains "Content-Type" it adds no
-- part header of its own, so our body is a complete MIME part: a multipart/alternative with
-- the plain-text and the HTML version, both UTF-8 in quoted-printable (transcripts are long
-- single lines; SMTP allows 998 characters per line).

local text = require("callpipe_asr.text")

local M = {}

--- Read a template file; returns its content or nil and a message.
function M.read_template(path)
  local handle, problem = io.open(path, "rb")
  if not handle then
    return nil, problem
  end
  local content = handle:read("*a")
  handle:close()
  return content
end

local function plain(value)
  return text.clean_body_text(value)
end

local function html(value)
  -- Escaped first, then line breaks made visible: the escape leaves no markup to break.
  return (text.html_escape(text.clean_body_text(value)):gsub("\n", "<br>\n"))
end

--- Build the headers and body.
-- message = { to, from, subject, values = {placeholder -> text}, text_template, html_template,
--             message_id }
-- Returns headers (string, "\n"-separated, no trailing newline) and body (string).
function M.compose(message)
  local boundary = "=_callpipe_asr_alternative_" .. tostring(os.time())
  -- A boundary starting with "=_" cannot occur inside quoted-printable data, where every
  -- literal '=' is written "=3D".
  local headers = table.concat({
    "From: " .. message.from,
    "To: " .. message.to,
    "Subject: " .. text.encode_header(text.render(message.subject, message.values, function(v)
      return text.header_text(v, 120)
    end)),
    "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S +0000"),
    "Message-ID: <" .. message.message_id .. ">",
    "Auto-Submitted: auto-generated",
    "X-Mailer: callpipe-asr voicemail_transcribe.lua",
  }, "\n")
  local body = table.concat({
    "Content-Type: multipart/alternative;",
    ' boundary="' .. boundary .. '"',
    "",
    "--" .. boundary,
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    text.quoted_printable(text.render(message.text_template, message.values, plain)),
    "--" .. boundary,
    "Content-Type: text/html; charset=UTF-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    text.quoted_printable(text.render(message.html_template, message.values, html)),
    "--" .. boundary .. "--",
  }, "\n")
  return headers, body
end

return M
