-- Headless test of ide/nvim against a real agentd (tests/integration/test_nvim.py
-- starts it and sets AGENTD_SOCKET, AGENTD_TEST_TMP, and for approvals
-- AGENTD_TEST_APPROVALS=1 with AGENTD_TEST_UPSTREAM_PORT). Exits 0 on success.
local failures, passed = 0, 0

local function log(msg)
  io.stderr:write(msg .. "\n")
end

local function check(cond, what)
  if not cond then
    error(what, 2)
  end
end

local function wait_for(what, fn, ms)
  local ok = vim.wait(ms or 20000, fn, 20)
  check(ok, "timed out waiting for " .. what)
end

local function buf_lines(buf)
  return vim.api.nvim_buf_get_lines(buf, 0, -1, false)
end

local function buf_has(buf, pattern)
  for _, l in ipairs(buf_lines(buf)) do
    if l:find(pattern) then
      return l
    end
  end
  return nil
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local d = f:read("*a")
  f:close()
  return d
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function press(keys)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "x", false)
end

local function cursor_to(buf, pattern)
  for i, l in ipairs(buf_lines(buf)) do
    if l:find(pattern) then
      vim.api.nvim_win_set_cursor(0, { i, 0 })
      return i
    end
  end
  error("no line matching " .. pattern .. " in\n" .. table.concat(buf_lines(buf), "\n"))
end

local agentd = require("agentd")
local review = require("agentd.review")
local tmp = assert(os.getenv("AGENTD_TEST_TMP"), "AGENTD_TEST_TMP is not set")
local events = {}
table.insert(agentd.listeners, function(method, params)
  table.insert(events, { method = method, params = params })
end)

local function ended(id)
  for _, e in ipairs(events) do
    if e.method == "sandbox.state" and e.params.id == id and (e.params.state == "exited" or e.params.state == "killed") then
      return e.params
    end
  end
end

local function new_workspace(name)
  local ws = tmp .. "/" .. name
  vim.fn.mkdir(ws, "p")
  write(ws .. "/edit.txt", "before\n")
  write(ws .. "/keep.txt", "keep\n")
  vim.cmd("cd " .. vim.fn.fnameescape(ws))
  return ws
end

local tests = {}
local function test(name, fn)
  table.insert(tests, { name = name, fn = fn })
end

local ID -- the sandbox of the spawn test, reviewed afterwards
local WS

test("commands are defined", function()
  for _, c in ipairs({ "AgentdSpawn", "AgentdList", "AgentdLogs", "AgentdKill", "AgentdRevoke", "AgentdReview", "AgentdApprovals" }) do
    check(vim.fn.exists(":" .. c) == 2, c .. " is not a command")
  end
  local task, argv = agentd.parse_spawn_args("--task web -- make test && echo ok")
  check(task == "web" and argv[1] == "/bin/sh" and argv[3] == "make test && echo ok", vim.inspect({ task, argv }))
end)

test("spawn in the project streams output into a logs buffer", function()
  WS = new_workspace("ws-spawn")
  vim.cmd("AgentdSpawn -- echo early; sleep 1; echo late; echo after > edit.txt; echo one > one.txt; echo two > two.txt; echo x > .envrc; printf 'no newline'")
  local buf = vim.api.nvim_get_current_buf()
  local name = vim.api.nvim_buf_get_name(buf)
  ID = name:match("agentd://logs/(.+)$")
  check(ID, "the current buffer is not a logs buffer: " .. name)
  -- "late" is printed a second after the spawn: it can only come from sandbox.output events.
  wait_for("the sandbox's output and its end in the logs buffer", function()
    return buf_has(buf, "^%[agentd: sandbox .* exited, exit code 0%]$") ~= nil
  end)
  local lines = buf_lines(buf)
  check(lines[1] == "early" and lines[2] == "late" and lines[3] == "no newline", vim.inspect(lines))
  check(not vim.api.nvim_buf_get_option(buf, "modifiable"), "logs buffer is modifiable")
  local late = false
  for _, e in ipairs(events) do
    if e.method == "sandbox.output" and e.params.id == ID and e.params.data:find("late") then
      late = true
    end
  end
  check(late, "no sandbox.output event carried 'late'")
  local list = agentd.call("sandbox.list", {})
  local mine
  for _, s in ipairs(list) do
    if s.id == ID then
      mine = s
    end
  end
  check(mine and mine.workspace == WS, "sandbox not in the project: " .. vim.inspect(mine))
  check(read(WS .. "/edit.txt") == "before\n", "the host copy changed before review")
end)

test("list buffer shows the sandbox", function()
  local buf = agentd.list()
  check(buf_has(buf, "^" .. vim.pesc(ID) .. "%s+default%s+exited%s+0"), table.concat(buf_lines(buf), "\n"))
end)

test("review lists changes, marks guarded paths, opens a read-only diff split", function()
  local buf = review.open(ID)
  check(buf_has(buf, "^  M  edit%.txt$"), table.concat(buf_lines(buf), "\n"))
  check(buf_has(buf, "^  A  one%.txt$") and buf_has(buf, "^  A  two%.txt$"), table.concat(buf_lines(buf), "\n"))
  check(buf_has(buf, "^  A  %.envrc%s+%[guarded"), ".envrc not shown as guarded: " .. table.concat(buf_lines(buf), "\n"))
  cursor_to(buf, "edit%.txt")
  local tabs = #vim.api.nvim_list_tabpages()
  press("<CR>")
  check(#vim.api.nvim_list_tabpages() == tabs + 1, "no diff tab opened")
  local wins = vim.api.nvim_tabpage_list_wins(0)
  check(#wins == 2, "diff tab has " .. #wins .. " windows")
  local left, right = vim.api.nvim_win_get_buf(wins[1]), vim.api.nvim_win_get_buf(wins[2])
  check(vim.deep_equal(buf_lines(left), { "before" }), "host side: " .. vim.inspect(buf_lines(left)))
  check(vim.deep_equal(buf_lines(right), { "after" }), "sandbox side: " .. vim.inspect(buf_lines(right)))
  for _, w in ipairs(wins) do
    check(vim.api.nvim_win_get_option(w, "diff"), "window not in diff mode")
    check(not vim.api.nvim_buf_get_option(vim.api.nvim_win_get_buf(w), "modifiable"), "diff side is modifiable")
  end
  check(vim.api.nvim_buf_get_name(right):find("/sandbox/edit%.txt$"), vim.api.nvim_buf_get_name(right))
  vim.cmd("tabclose")
  -- An added file: the host side is empty.
  vim.api.nvim_set_current_buf(buf)
  cursor_to(buf, "one%.txt")
  press("<CR>")
  wins = vim.api.nvim_tabpage_list_wins(0)
  check(vim.deep_equal(buf_lines(vim.api.nvim_win_get_buf(wins[1])), { "" }), "host side of an added file")
  check(vim.deep_equal(buf_lines(vim.api.nvim_win_get_buf(wins[2])), { "one" }), "sandbox side of an added file")
  vim.cmd("tabclose")
end)

test("promote the marked subset, then all: a conflict and a guarded path are kept back and shown", function()
  local buf = vim.fn.bufnr("agentd://review/" .. ID)
  vim.api.nvim_set_current_buf(buf)
  cursor_to(buf, "edit%.txt")
  press("<Space>")
  cursor_to(buf, "one%.txt")
  press("<Space>")
  check(buf_has(buf, "^%* M  edit%.txt$") and buf_has(buf, "^%* A  one%.txt$"), table.concat(buf_lines(buf), "\n"))
  press("p")
  check(read(WS .. "/edit.txt") == "after\n", "edit.txt not promoted")
  check(read(WS .. "/one.txt") == "one\n", "one.txt not promoted")
  check(read(WS .. "/two.txt") == nil, "two.txt promoted though not marked")
  check(not buf_has(buf, "edit%.txt") or buf_has(buf, "^promoted"), table.concat(buf_lines(buf), "\n"))
  check(buf_has(buf, "^  A  two%.txt$"), "two.txt no longer listed")
  -- The host gets its own two.txt: promoting everything now is a conflict there.
  write(WS .. "/two.txt", "host's own\n")
  press("P")
  check(read(WS .. "/two.txt") == "host's own\n", "a conflict overwrote the host's file")
  check(read(WS .. "/.envrc") == nil, "a guarded path was promoted")
  check(buf_has(buf, "^  [AM]  two%.txt%s+%[conflict: "), "conflict not marked: " .. table.concat(buf_lines(buf), "\n"))
  check(buf_has(buf, "^conflict %(not promoted%): two%.txt"), table.concat(buf_lines(buf), "\n"))
  check(buf_has(buf, "^guarded %(not promoted%): %.envrc"), table.concat(buf_lines(buf), "\n"))
end)

test("discard throws the change layer away", function()
  check(review.discard(ID), "discard failed")
  local res, err = agentd.call("sandbox.diff", { id = ID }, true)
  check(res == nil and err.code == "not_found", vim.inspect(err))
  check(buf_has(vim.fn.bufnr("agentd://review/" .. ID), "^discarded"), "discard not shown")
end)

test("kill and revoke", function()
  new_workspace("ws-kill")
  local a = agentd.spawn({ argv = { "/bin/sleep", "60" }, open_logs = false })
  local b = agentd.spawn({ argv = { "/bin/sleep", "60" }, open_logs = false })
  check(a and b, "spawn failed")
  vim.cmd("AgentdKill " .. a)
  wait_for("the killed sandbox to end", function() return ended(a) end)
  check(ended(a).signal == 15 or ended(a).state == "killed", vim.inspect(ended(a)))
  local res = agentd.revoke(b)
  check(res and res.killed, "revoke: " .. vim.inspect(res))
  wait_for("the revoked sandbox to end", function() return ended(b) end)
  -- Errors are reported, not raised.
  local r, err = agentd.call("sandbox.kill", { id = "no-such-sandbox" }, true)
  check(r == nil and err.code == "not_found", vim.inspect(err))
end)

test("the client reconnects and subscribes again after losing its connection", function()
  local c = agentd.get_client()
  c:_lost("test: dropped")
  check(not c.connected, "still connected")
  wait_for("the reconnection", function() return c.connected end, 10000)
  new_workspace("ws-reconnect")
  local id = agentd.spawn({ argv = { "/bin/sh", "-c", "sleep 0.5; echo again" }, open_logs = true })
  local buf = vim.api.nvim_get_current_buf()
  wait_for("output after reconnecting", function() return buf_has(buf, "^again$") ~= nil end)
  check(c.reconnects == 1, "reconnects: " .. c.reconnects)
  _ = id
end)

test("approval prompt through vim.ui.select", function()
  if os.getenv("AGENTD_TEST_APPROVALS") ~= "1" then
    local res, err = agentd.call("approval.list", {}, true)
    check(res == nil and err.code == "method_not_found", "approval.list exists but the approval test was not set up")
    log("SKIP approvals: this agentd has no approval.list (method_not_found)")
    return "skip"
  end
  local port = assert(os.getenv("AGENTD_TEST_UPSTREAM_PORT"))
  local prompts = {}
  local orig = vim.ui.select
  vim.ui.select = function(items, opts, on_choice)
    table.insert(prompts, opts.prompt)
    for _, it in ipairs(items) do
      if opts.format_item(it) == "Approve once" then
        return on_choice(it)
      end
    end
    on_choice(nil)
  end
  new_workspace("ws-approval")
  local id = agentd.spawn({
    task = "ask",
    argv = { "/bin/sh", "-c", "export NO_PROXY= no_proxy=; curl -s -m 40 -o /dev/null -w 'code=%{http_code}\\n' http://127.0.0.1:" .. port .. "/" },
  })
  local buf = vim.api.nvim_get_current_buf()
  wait_for("the approved request's answer in the logs", function() return buf_has(buf, "^code=") ~= nil end, 45000)
  vim.ui.select = orig
  check(buf_has(buf, "^code=200$"), table.concat(buf_lines(buf), "\n"))
  check(#prompts == 1, vim.inspect(prompts))
  check(prompts[1]:find(id, 1, true) and prompts[1]:find("task ask", 1, true) and
    prompts[1]:find("127.0.0.1:" .. port, 1, true), prompts[1])
  local answered
  for _, e in ipairs(events) do
    if e.method == "approval.answered" then
      answered = e.params
    end
  end
  check(answered and answered.decision == "approve" and answered.scope == "once", vim.inspect(answered))
end)

local skipped = 0
for _, t in ipairs(tests) do
  local ok, res = xpcall(t.fn, debug.traceback)
  if not ok then
    failures = failures + 1
    log("FAIL " .. t.name .. "\n" .. tostring(res))
  elseif res == "skip" then
    skipped = skipped + 1
    log("SKIP " .. t.name)
  else
    passed = passed + 1
    log("PASS " .. t.name)
  end
end
log(string.format("nvim: %d passed, %d failed, %d skipped", passed, failures, skipped))
if agentd.client then
  agentd.client:close()
end
vim.cmd(failures == 0 and "qall!" or "cquit 1")
