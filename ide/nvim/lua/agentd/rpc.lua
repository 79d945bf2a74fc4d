-- A msgpack-rpc client for agentd's socket on libuv (vim.uv, or vim.loop on
-- Neovim < 0.10) and vim.mpack. Neovim's own rpc channels would take agentd's
-- notifications for calls into Neovim's API, hence this client.
local uv = vim.uv or vim.loop
local mpack = vim.mpack

local M = {}
local Client = {}
Client.__index = Client

--- The socket agentd listens on: $AGENTD_SOCKET, else $XDG_RUNTIME_DIR/agentd/agentd.sock.
function M.default_socket()
  local s = os.getenv("AGENTD_SOCKET")
  if s and s ~= "" then
    return s
  end
  local rt = os.getenv("XDG_RUNTIME_DIR")
  if not rt or rt == "" then
    rt = "/run/user/" .. tostring(uv.getuid and uv.getuid() or 0)
  end
  return rt .. "/agentd/agentd.sock"
end

--- Errors v2 on the wire: [kind, "code: message"] -> {code, message, kind}.
function M.parse_error(raw)
  if type(raw) == "table" and type(raw[2]) == "string" then
    local code, msg = raw[2]:match("^([%w_]+): (.*)$")
    if code then
      return { code = code, message = msg, kind = raw[1] }
    end
    return { code = "internal", message = raw[2], kind = raw[1] }
  end
  return { code = "invalid_request", message = "error of unknown shape: " .. vim.inspect(raw), kind = 0 }
end

function M.format_error(err)
  return string.format("%s: %s", err.code, err.message)
end

--- opts: path, reconnect (default true), on_notification(method, params),
--- on_connect(client) (after every (re)connection, in libuv's callback: it may
--- only call client:request), on_disconnect(reason).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    path = opts.path or M.default_socket(),
    reconnect = opts.reconnect ~= false,
    on_notification = opts.on_notification,
    on_connect = opts.on_connect,
    on_disconnect = opts.on_disconnect,
    next_id = 1,
    pending = {},
    connected = false,
    closing = false,
    retry_ms = 200,
    reconnects = 0,
  }, Client)
  return self
end

function Client:_fail_pending(reason)
  local pending = self.pending
  self.pending = {}
  for _, cb in pairs(pending) do
    vim.schedule(function()
      cb({ code = "disconnected", message = reason, kind = 0 }, nil)
    end)
  end
end

function Client:_on_message(msg)
  if type(msg) ~= "table" then
    return
  end
  if msg[1] == 1 then
    local cb = self.pending[msg[2]]
    self.pending[msg[2]] = nil
    if cb then
      local err = msg[3] ~= vim.NIL and msg[3] ~= nil and M.parse_error(msg[3]) or nil
      local res = msg[4]
      if res == vim.NIL then
        res = nil
      end
      vim.schedule(function()
        cb(err, res)
      end)
    end
  elseif msg[1] == 2 and self.on_notification then
    local params = type(msg[3]) == "table" and msg[3][1] or msg[3]
    local method = msg[2]
    vim.schedule(function()
      self.on_notification(method, params)
    end)
  end
end

function Client:_lost(reason)
  if not self.connected and not self.pipe then
    return
  end
  self.connected = false
  if self.pipe and not self.pipe:is_closing() then
    self.pipe:close()
  end
  self.pipe = nil
  self:_fail_pending(reason)
  if self.on_disconnect then
    vim.schedule(function()
      self.on_disconnect(reason)
    end)
  end
  self:_schedule_reconnect()
end

-- After a lost connection: try again, backing off from 200 ms to 5 s.
function Client:_schedule_reconnect()
  if not self.reconnect or self.closing then
    return
  end
  local timer = uv.new_timer()
  timer:start(self.retry_ms, 0, function()
    timer:close()
    self.retry_ms = math.min(self.retry_ms * 2, 5000)
    self.reconnects = self.reconnects + 1
    self:connect()
  end)
end

--- Connects (asynchronously); cb(err) once connected or failed. Requests
--- made before the connection is up are sent when it is.
function Client:connect(cb)
  if self.pipe then
    if cb then
      cb(nil)
    end
    return
  end
  self.closing = false
  local pipe = uv.new_pipe(false)
  self.pipe = pipe
  self.queue = self.queue or {}
  pipe:connect(self.path, function(cerr)
    if cerr then
      self.pipe = nil
      if not pipe:is_closing() then
        pipe:close()
      end
      if cb then
        vim.schedule(function()
          cb({ code = "disconnected", message = "cannot connect to " .. self.path .. ": " .. cerr, kind = 0 })
        end)
      end
      self:_fail_queue("cannot connect to " .. self.path .. ": " .. cerr)
      if self.reconnects > 0 then
        self:_schedule_reconnect() -- still in a reconnect cycle
      end
      return
    end
    self.connected = true
    self.retry_ms = 200
    local unpacker = mpack.Unpacker()
    pipe:read_start(function(rerr, chunk)
      if rerr or not chunk then
        self:_lost(rerr or "agentd closed the connection")
        return
      end
      local pos = 1
      while pos <= #chunk do
        local ok, obj, newpos = pcall(unpacker, chunk, pos)
        if not ok then
          self:_lost("undecodable message from agentd: " .. tostring(obj))
          return
        end
        pos = newpos
        if obj == nil then
          break
        end
        self:_on_message(obj)
      end
    end)
    -- on_connect runs here (a fast callback: it may only send requests), so
    -- what it sends (events.subscribe) goes before the requests made while
    -- connecting: no event of a sandbox spawned by them is missed.
    if self.on_connect then
      self.on_connect(self)
    end
    local queue = self.queue
    self.queue = {}
    for _, data in ipairs(queue) do
      pipe:write(data)
    end
    if cb then
      vim.schedule(function()
        cb(nil)
      end)
    end
  end)
end

function Client:_fail_queue(reason)
  self.queue = {}
  self:_fail_pending(reason)
end

--- Sends a request; cb(err, result) runs on the main loop. params: a table
--- (nil or {} for all defaults).
function Client:request(method, params, cb)
  local id = self.next_id
  self.next_id = id >= 0xffffffff and 1 or id + 1
  self.pending[id] = cb or function() end
  local data = mpack.encode({ 0, id, method, params == nil and {} or { params } })
  if self.connected and self.pipe then
    self.pipe:write(data)
  else
    self.queue = self.queue or {}
    table.insert(self.queue, data)
    if not self.pipe then
      self:connect()
    end
  end
  return id
end

--- Waits (vim.wait, so the UI stays live) for the result: returns err, result.
function Client:request_sync(method, params, timeout_ms)
  local done, err, res = false, nil, nil
  self:request(method, params, function(e, r)
    done, err, res = true, e, r
  end)
  if not vim.wait(timeout_ms or 10000, function()
    return done
  end, 10) then
    return { code = "timeout", message = method .. ": no reply within " .. (timeout_ms or 10000) .. " ms", kind = 0 }, nil
  end
  return err, res
end

function Client:close()
  self.closing = true
  self.reconnect = false
  if self.pipe and not self.pipe:is_closing() then
    self.pipe:close()
  end
  self.pipe = nil
  self.connected = false
  self:_fail_queue("closed")
end

return M
