-- Review a sandbox's changes: a list buffer (agentd://review/ID); each file
-- opens as a read-only diff of the host copy and the sandbox's copy (from the
-- change layer, sandbox.diff's layer_path); promote all or the marked ones,
-- or discard. Guarded paths and conflicts are marked in the list.
local agentd = require("agentd")

local M = {}
M.state = {} -- sandbox id -> {buf, changes, marked = {path=true}, conflicts = {path=reason}, line_entry}

local HELP = "<CR> diff  <Space> mark  p promote marked (or all)  P promote all  H promote incl. guarded  D discard  r refresh"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local data = f:read("*a")
  f:close()
  return data
end

local function to_lines(data)
  if data == "" then
    return {}
  end
  local lines = vim.split(data, "\n", { plain = true })
  if lines[#lines] == "" then
    table.remove(lines)
  end
  return lines
end

--- The text of one side of a change, as lines ({} when that side has none).
function M.side_lines(entry, side)
  local uv = vim.uv or vim.loop
  if side == "host" and entry.change == "added" then
    return {}
  end
  if side == "sandbox" and entry.change == "deleted" then
    return {}
  end
  local path = side == "host" and entry.host_path or entry.layer_path
  local st = uv.fs_lstat(path)
  if not st then
    return { "(missing: " .. path .. ")" }
  end
  if st.type == "directory" then
    return { "(directory)" }
  elseif st.type == "link" then
    return { "(symlink to " .. tostring(uv.fs_readlink(path)) .. ")" }
  elseif st.type ~= "file" then
    return { "(" .. st.type .. ")" }
  end
  local data = read_file(path)
  if not data then
    return { "(unreadable: " .. path .. ")" }
  end
  if data:find("%z") then
    return { string.format("(binary file, %d bytes)", #data) }
  end
  return to_lines(data)
end

local function entry_line(st, e)
  local tag = ({ added = "A", deleted = "D", modified = "M" })[e.change] or "?"
  local notes = {}
  if e.guarded then
    table.insert(notes, "[guarded: promoted only with H]")
  end
  if st.conflicts[e.path] then
    table.insert(notes, "[conflict: " .. st.conflicts[e.path] .. "]")
  end
  if e.type ~= "file" then
    table.insert(notes, "(" .. e.type .. ")")
  end
  return string.format("%s %s  %s%s", st.marked[e.path] and "*" or " ", tag, e.path,
    #notes > 0 and ("    " .. table.concat(notes, " ")) or "")
end

function M.render(id)
  local st = M.state[id]
  local lines = { "agentd review: sandbox " .. id .. "  (" .. #st.changes .. " changes)", HELP, "" }
  st.line_entry = {}
  for _, e in ipairs(st.changes) do
    table.insert(lines, entry_line(st, e))
    st.line_entry[#lines] = e
  end
  if #st.changes == 0 then
    table.insert(lines, "(no changes left)")
  end
  for _, msg in ipairs(st.messages or {}) do
    table.insert(lines, msg)
  end
  agentd.scratch("agentd://review/" .. id, lines, "agentdreview")
end

--- Fetches the changes again (sandbox.diff with layer paths).
function M.refresh(id)
  local st = M.state[id]
  local changes = agentd.call("sandbox.diff", { id = id, patch = true })
  if not changes then
    return nil
  end
  st.changes = changes
  local present = {}
  for _, e in ipairs(changes) do
    present[e.path] = true
  end
  for p in pairs(st.marked) do
    if not present[p] then
      st.marked[p] = nil
    end
  end
  M.render(id)
  return changes
end

local function current(id)
  local st = M.state[id]
  return st.line_entry[vim.api.nvim_win_get_cursor(0)[1]]
end

--- Opens one change as a diff in a new tab: host copy left, sandbox copy right.
function M.open_diff(id, entry)
  vim.cmd("tabnew")
  local function side(name, lines)
    local bufname = string.format("agentd://%s/%s/%s", id, name, entry.path)
    local buf = agentd.scratch(bufname, lines)
    vim.api.nvim_set_current_buf(buf)
    vim.api.nvim_buf_set_option(buf, "readonly", true)
    if vim.filetype and vim.filetype.match then
      local ok, ft = pcall(vim.filetype.match, { filename = entry.path }) -- Neovim 0.8+
      if ok and type(ft) == "string" then
        vim.api.nvim_buf_set_option(buf, "filetype", ft)
      elseif not ok then
        pcall(vim.filetype.match, entry.path, buf) -- Neovim 0.7 sets it itself
      end
    end
    vim.cmd("diffthis")
    return buf
  end
  local host = side("host", M.side_lines(entry, "host"))
  vim.cmd("rightbelow vsplit")
  local sandbox = side("sandbox", M.side_lines(entry, "sandbox"))
  return host, sandbox
end

local function show_result(id, res)
  local st = M.state[id]
  st.messages = { "" }
  table.insert(st.messages, string.format("promoted %d path(s)", #(res.promoted or {})))
  for _, c in ipairs(res.conflicts or {}) do
    st.conflicts[c.path] = c.reason or "changed on the host"
    table.insert(st.messages, "conflict (not promoted): " .. c.path .. ": " .. (c.reason or ""))
  end
  for _, g in ipairs(res.guarded or {}) do
    table.insert(st.messages, "guarded (not promoted): " .. g.path)
  end
end

--- Promotes paths (nil: everything not guarded); returns sandbox.promote's result.
function M.promote(id, paths, include_hooks)
  local params = { id = id }
  if paths then
    params.paths = paths
  end
  if include_hooks then
    params.include_hooks = true
  end
  local res = agentd.call("sandbox.promote", params)
  if not res then
    return nil
  end
  for _, p in ipairs(res.promoted or {}) do
    M.state[id].marked[p] = nil
  end
  show_result(id, res)
  M.refresh(id)
  agentd.notify(string.format("promoted %d, %d conflicts, %d guarded kept back", #(res.promoted or {}),
    #(res.conflicts or {}), #(res.guarded or {})))
  return res
end

function M.marked_paths(id)
  local out = {}
  for _, e in ipairs(M.state[id].changes) do
    if M.state[id].marked[e.path] then
      table.insert(out, e.path)
    end
  end
  return #out > 0 and out or nil
end

function M.discard(id)
  if not agentd.call("sandbox.discard", { id = id }) then
    return false
  end
  M.state[id].changes = {}
  M.state[id].messages = { "", "discarded: the change layer is gone" }
  M.render(id)
  return true
end

--- :AgentdReview ID — the list of changes.
function M.open(id)
  M.state[id] = M.state[id] or { changes = {}, marked = {}, conflicts = {}, line_entry = {} }
  if not M.refresh(id) then
    return nil
  end
  local buf = vim.fn.bufnr("agentd://review/" .. id)
  vim.api.nvim_set_current_buf(buf)
  local function map(lhs, fn)
    vim.api.nvim_buf_set_keymap(buf, "n", lhs, "", { noremap = true, nowait = true, callback = fn })
  end
  map("<CR>", function()
    local e = current(id)
    if e then
      M.open_diff(id, e)
    end
  end)
  map("<Space>", function()
    local e = current(id)
    if e then
      local st = M.state[id]
      st.marked[e.path] = not st.marked[e.path] or nil
      local pos = vim.api.nvim_win_get_cursor(0)
      M.render(id)
      vim.api.nvim_win_set_cursor(0, { math.min(pos[1] + 1, vim.api.nvim_buf_line_count(0)), 0 })
    end
  end)
  map("p", function() M.promote(id, M.marked_paths(id)) end)
  map("P", function() M.promote(id, nil) end)
  map("H", function()
    if vim.fn.confirm("Promote guarded paths (git hooks, editor and shell config) too?", "&Yes\n&No", 2) == 1 then
      M.promote(id, M.marked_paths(id), true)
    end
  end)
  map("D", function()
    if vim.fn.confirm("Discard all changes of sandbox " .. id .. "?", "&Yes\n&No", 2) == 1 then
      M.discard(id)
    end
  end)
  map("r", function() M.refresh(id) end)
  return buf
end

return M
