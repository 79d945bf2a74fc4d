-- agentd commands (:help agentd). Nothing connects until a command runs.
if vim.g.loaded_agentd then
  return
end
vim.g.loaded_agentd = true

local function cmd(name, fn, opts)
  vim.api.nvim_create_user_command(name, fn, opts or {})
end

local function ids(lead)
  return require("agentd").complete_ids(lead)
end

cmd("AgentdSpawn", function(o)
  local a = require("agentd")
  local task, argv = a.parse_spawn_args(o.args)
  a.spawn({ task = task, argv = argv })
end, { nargs = "*", desc = "agentd: start a sandbox in the current project" })
cmd("AgentdList", function() require("agentd").list() end, { desc = "agentd: list sandboxes" })
cmd("AgentdLogs", function(o) require("agentd").logs(o.args) end,
  { nargs = 1, complete = ids, desc = "agentd: follow a sandbox's output" })
cmd("AgentdKill", function(o) require("agentd").kill(o.args) end,
  { nargs = 1, complete = ids, desc = "agentd: SIGTERM a sandbox" })
cmd("AgentdRevoke", function(o) require("agentd").revoke(o.args) end,
  { nargs = 1, complete = ids, desc = "agentd: incident: freeze, revoke, snapshot, kill" })
cmd("AgentdReview", function(o) require("agentd.review").open(o.args) end,
  { nargs = 1, complete = ids, desc = "agentd: review and promote a sandbox's changes" })
cmd("AgentdApprovals", function() require("agentd").approvals() end, { desc = "agentd: answer pending approvals" })
