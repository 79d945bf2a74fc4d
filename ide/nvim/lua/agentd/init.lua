-- agentd in Neovim: spawn sandboxes in the current project, list them, follow
-- their output, kill or revoke them, review and promote their changes
-- (agentd.review), answer approval prompts. :help agentd
local rpc = require("agentd.rpc")

local M = {}

M.config = {
  socket = nil, -- default: $AGENTD_SOCKET, else $XDG_RUNTIME_DIR/agentd/agentd.sock
  task = nil, -- default task for :AgentdSpawn (agentd's "default")
  open_logs = true, -- :AgentdSpawn opens the logs buffer
  approvals = true, -- prompt for approval.requested with vim.ui.select
}

M.client = nil
M.log_buffers = {} -- sandbox id -> {buf, ready, pending}
M.listeners = {} -- functions(method, params), e.g. from tests or other plugins
M.approval_queue = {}
M.prompting = false
M.answered = {} -- approval ids answered (here or elsewhere): no stale prompt

local function notify(msg, level)
  vim.notify("agentd: " .. msg, level or vim.log.levels.INFO)
end
M.notify = notify

function M.setup(opts)
  M.config = vim.tbl_extend("force", M.config, opts or {})
  if M.client then
    M.client:close()
    M.client = nil
  end
end

--- The project a sandbox works in: the git top level of the current
--- directory, else the current directory.
function M.project_root()
  local cwd = vim.fn.getcwd()
  local top = vim.fn.systemlist({ "git", "-C", cwd, "rev-parse", "--show-toplevel" })
  if vim.v.shell_error == 0 and top[1] and top[1] ~= "" then
    return top[1]
  end
  return cwd
end

local function on_notification(method, params)
  if method == "sandbox.output" then
    M._append_output(params)
  elseif method == "sandbox.state" then
    M._state(params)
  elseif method == "approval.requested" then
    M._approval_requested(params)
  elseif method == "approval.answered" then
    M.answered[params.id] = params
  elseif method == "alert" then
    notify("alert: " .. (params.message or vim.inspect(params)), vim.log.levels.WARN)
  end
  for _, fn in ipairs(M.listeners) do
    fn(method, params)
  end
end

--- The shared connection; subscribes to events on every (re)connection.
function M.get_client()
  if not M.client then
    M.client = rpc.new({
      path = M.config.socket,
      on_notification = on_notification,
      on_connect = function(c)
        c:request("events.subscribe", {}, function(err)
          if err then
            notify("events.subscribe: " .. rpc.format_error(err), vim.log.levels.ERROR)
          end
        end)
      end,
    })
    M.client:connect()
  end
  return M.client
end

--- Calls a method and waits for it: returns result, or nil and the error
--- (after telling the user, unless quiet).
function M.call(method, params, quiet)
  local err, res = M.get_client():request_sync(method, params, 30000)
  if err then
    if not quiet then
      notify(method .. ": " .. rpc.format_error(err), vim.log.levels.ERROR)
    end
    return nil, err
  end
  return res
end

-- ---- spawn ----------------------------------------------------------------

--- Parses ":AgentdSpawn [--task NAME] [--] SHELL COMMAND": returns the task
--- (or nil) and argv ({"/bin/sh", "-c", COMMAND}, or {} for the task's own).
function M.parse_spawn_args(args)
  local task = M.config.task
  local rest = vim.trim(args or "")
  while true do
    local name, after = rest:match("^%-%-task[= ]%s*(%S+)%s*(.*)$")
    if not name then
      break
    end
    task, rest = name, after
  end
  rest = rest:gsub("^%-%-%s*", "", 1)
  if rest == "" then
    return task, {}
  end
  return task, { "/bin/sh", "-c", rest }
end

--- Starts a detached sandbox in the current project; returns its id.
function M.spawn(opts)
  opts = opts or {}
  local params = { workspace = opts.workspace or M.project_root() }
  if opts.task then
    params.task = opts.task
  end
  if opts.argv and #opts.argv > 0 then
    params.argv = opts.argv
  end
  M.get_client()
  local res = M.call("sandbox.spawn", params)
  if not res then
    return nil
  end
  notify(string.format("sandbox %s (%s) started in %s", res.id, res.task or "default", params.workspace))
  if opts.open_logs ~= false and M.config.open_logs then
    M.logs(res.id)
  end
  return res.id
end

-- ---- list -----------------------------------------------------------------

function M.list_lines(list)
  local lines = { string.format("%-36s %-12s %-8s %-6s %s", "ID", "TASK", "STATE", "EXIT", "WORKSPACE") }
  for _, s in ipairs(list) do
    local exit = (s.exit_code ~= nil and s.exit_code ~= vim.NIL) and tostring(s.exit_code) or "-"
    table.insert(lines, string.format("%-36s %-12s %-8s %-6s %s", s.id, s.task or "", s.state or "", exit, s.workspace or ""))
  end
  return lines
end

local function scratch(name, lines, ft)
  local buf = vim.fn.bufnr(name)
  if buf == -1 then
    buf = vim.api.nvim_create_buf(true, true)
    vim.api.nvim_buf_set_name(buf, name)
  end
  vim.api.nvim_buf_set_option(buf, "buftype", "nofile")
  vim.api.nvim_buf_set_option(buf, "swapfile", false)
  vim.api.nvim_buf_set_option(buf, "modifiable", true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.api.nvim_buf_set_option(buf, "modifiable", false)
  if ft then
    vim.api.nvim_buf_set_option(buf, "filetype", ft)
  end
  return buf
end
M.scratch = scratch

local function id_under_cursor()
  return vim.api.nvim_get_current_line():match("^(%S+)")
end

--- :AgentdList — a buffer of sandboxes; <CR> review, l logs, K kill, R revoke, r refresh.
function M.list()
  local list = M.call("sandbox.list", {})
  if not list then
    return nil
  end
  local buf = scratch("agentd://sandboxes", M.list_lines(list), "agentdlist")
  vim.api.nvim_set_current_buf(buf)
  local function map(lhs, fn)
    vim.api.nvim_buf_set_keymap(buf, "n", lhs, "", {
      noremap = true,
      nowait = true,
      callback = function()
        local id = id_under_cursor()
        if id and id ~= "ID" then
          fn(id)
        end
      end,
    })
  end
  map("<CR>", function(id) require("agentd.review").open(id) end)
  map("l", M.logs)
  map("K", M.kill)
  map("R", M.revoke)
  map("r", function() M.list() end)
  return buf, list
end

-- ---- logs -----------------------------------------------------------------

local function append(buf, entry, text)
  if not vim.api.nvim_buf_is_valid(buf) or text == "" then
    return
  end
  vim.api.nvim_buf_set_option(buf, "modifiable", true)
  local last = vim.api.nvim_buf_line_count(buf)
  local cur = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ""
  local parts = vim.split(text, "\n", { plain = true })
  parts[1] = (entry.partial and cur or "") .. parts[1]
  if entry.partial or (last == 1 and cur == "") then
    vim.api.nvim_buf_set_lines(buf, last - 1, last, false, parts)
  else
    vim.api.nvim_buf_set_lines(buf, last, last, false, parts)
  end
  -- A trailing newline leaves an empty last element: the next output starts a fresh line.
  if parts[#parts] == "" then
    vim.api.nvim_buf_set_lines(buf, -2, -1, false, {})
    entry.partial = false
  else
    entry.partial = true
  end
  vim.api.nvim_buf_set_option(buf, "modifiable", false)
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    vim.api.nvim_win_set_cursor(win, { vim.api.nvim_buf_line_count(buf), 0 })
  end
end

function M._append_output(p)
  local entry = M.log_buffers[p.id]
  if not entry or not entry.ready then
    return -- before the logs snapshot: already in it (one connection keeps the order)
  end
  append(entry.buf, entry, p.data or "")
end

function M._state(p)
  local entry = M.log_buffers[p.id]
  if entry and entry.ready and not entry.ended_shown and (p.state == "exited" or p.state == "killed") then
    entry.ended_shown = true
    local how = p.signal and p.signal ~= 0 and ("signal " .. p.signal) or ("exit code " .. tostring(p.exit_code))
    entry.partial = false
    append(entry.buf, entry, string.format("[agentd: sandbox %s %s, %s]\n", p.id, p.state, how))
  end
end

--- :AgentdLogs ID — the sandbox's captured output, then live output as it comes.
function M.logs(id)
  local c = M.get_client()
  local name = "agentd://logs/" .. id
  local buf = scratch(name, { "" }, "agentdlog")
  local entry = { buf = buf, ready = false, partial = false }
  M.log_buffers[id] = entry
  vim.api.nvim_buf_set_var(buf, "agentd_sandbox", id)
  vim.api.nvim_set_current_buf(buf)
  -- The subscription is on this connection before this request: output that
  -- arrives before the reply is in the snapshot, output after it is new.
  c:request("sandbox.logs", { id = id }, function(err, res)
    if err then
      notify("sandbox.logs: " .. rpc.format_error(err), vim.log.levels.ERROR)
      return
    end
    entry.ready = true
    if res.stdout and res.stdout ~= "" then
      append(buf, entry, res.stdout)
    end
    if res.stderr and res.stderr ~= "" then
      entry.partial = false
      append(buf, entry, res.stderr)
    end
    -- Ended before we looked: say so (its state event came before the snapshot).
    c:request("sandbox.list", {}, function(lerr, list)
      for _, s in ipairs(not lerr and list or {}) do
        if s.id == id and (s.state == "exited" or s.state == "killed") and not entry.ended_shown then
          M._state({ id = id, state = s.state, exit_code = s.exit_code, signal = s.signal })
        end
      end
    end)
  end)
  return buf
end

-- ---- kill, revoke -----------------------------------------------------------

function M.kill(id)
  if M.call("sandbox.kill", { id = id }) then
    notify("sandbox " .. id .. ": sent SIGTERM")
    return true
  end
  return false
end

--- Incident response for one sandbox: freeze, revoke its tokens, snapshot, kill.
function M.revoke(id)
  local res = M.call("credentials.revoke", { sandbox = id })
  if res then
    notify(string.format("sandbox %s revoked: frozen %s, killed %s, tokens revoked %s, pending %s", id,
      tostring(res.frozen), tostring(res.killed), tostring(res.tokens_revoked), tostring(res.tokens_pending)))
  end
  return res
end

-- ---- approvals --------------------------------------------------------------

M.approval_choices = {
  { label = "Approve once", decision = "approve", scope = "once" },
  { label = "Approve for this sandbox", decision = "approve", scope = "sandbox" },
  { label = "Approve for this task", decision = "approve", scope = "task" },
  { label = "Deny", decision = "deny" },
}

function M.approval_prompt(a)
  return string.format("agentd: sandbox %s (task %s) asks for %s: %s", a.sandbox or "?", a.task or "?",
    a.kind or "?", a.what or "?")
end

local function next_prompt()
  if M.prompting then
    return
  end
  local a = table.remove(M.approval_queue, 1)
  while a and M.answered[a.id] do
    a = table.remove(M.approval_queue, 1)
  end
  if not a then
    return
  end
  M.prompting = true
  vim.ui.select(M.approval_choices, {
    prompt = M.approval_prompt(a),
    format_item = function(item)
      return item.label
    end,
    kind = "agentd.approval",
  }, function(choice)
    M.prompting = false
    -- Dismissing the prompt is no answer: agentd denies at AskTimeout=.
    if choice then
      M.answer(a.id, choice.decision, choice.scope)
    end
    next_prompt()
  end)
end

function M._approval_requested(a)
  if not M.config.approvals then
    return
  end
  table.insert(M.approval_queue, a)
  next_prompt()
end

function M.answer(id, decision, scope)
  local res = M.call("approval.answer", { id = id, decision = decision, scope = scope })
  if res then
    M.answered[id] = { id = id, decision = decision, scope = scope }
    notify(string.format("approval %s: %s%s", id, decision, scope and (" (" .. scope .. ")") or ""))
  end
  return res
end

--- :AgentdApprovals — prompts for every pending approval.
function M.approvals()
  local list = M.call("approval.list", {})
  if not list then
    return nil
  end
  if #list == 0 then
    notify("no pending approvals")
  end
  for _, a in ipairs(list) do
    M._approval_requested(a)
  end
  return list
end

--- Sandbox ids for command completion.
function M.complete_ids(lead)
  local ok, list = pcall(M.call, "sandbox.list", {}, true)
  local out = {}
  for _, s in ipairs(ok and list or {}) do
    if s.id:sub(1, #lead) == lead then
      table.insert(out, s.id)
    end
  end
  return out
end

return M
