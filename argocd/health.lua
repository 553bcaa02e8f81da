-- Argo CD health check for webrelease.dev/WebRelease (Lua 5.1, as Argo CD runs it).
--
--   Progressing  the operator has not yet observed this generation, or a run is going
--   Healthy      the run of the current generation is Complete (every customer succeeded)
--   Degraded     the run of the current generation is Failed or Degraded (customers failed),
--                or the spec was not Accepted
--
-- The message is the condition's, with the customer counts of status.customers unless it says them. Install it in argocd-cm under
-- resource.customizations.health.webrelease.dev_WebRelease (docs/install.md, "Argo CD").

local hs = {}

local function num(v)
  if type(v) == "number" then
    return v
  end
  return nil
end

-- "12/20 customers succeeded, 1 failed, 7 pending" (or nil when status has no customers yet)
local function counts(status)
  local c = status.customers
  if type(c) ~= "table" or num(c.total) == nil or c.total == 0 then
    return nil
  end
  local done = "succeeded"
  if type(status.run) == "table" and status.run.step == "plan" then
    done = "planned (dry run)"
  end
  local parts = { string.format("%d/%d customers %s", num(c.succeeded) or 0, c.total, done) }
  table.insert(parts, string.format("%d failed", num(c.failed) or 0))
  if num(c.pending) ~= nil and c.pending > 0 then
    table.insert(parts, string.format("%d pending", c.pending))
  end
  if num(c.notReleased) ~= nil and c.notReleased > 0 then
    table.insert(parts, string.format("%d not released", c.notReleased))
  end
  return table.concat(parts, ", ")
end

-- The condition's type, reason and message; the counts only when the message does not carry them
-- already (the operator's messages do) and there are customers to count.
local function message(cond, status)
  local text = cond.type
  if cond.reason ~= nil and cond.reason ~= "" then
    text = text .. " (" .. cond.reason .. ")"
  end
  if cond.message ~= nil and cond.message ~= "" then
    text = text .. ": " .. cond.message
  end
  local c = counts(status)
  if c ~= nil and (cond.message == nil or not string.find(cond.message, "%d+/%d+ customers")) then
    text = text .. "; " .. c
  end
  return text
end

local status = obj.status
local generation = num(obj.metadata and obj.metadata.generation)

if type(status) ~= "table" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the release"
  return hs
end

local observed = num(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  if observed == nil then
    hs.message = string.format("Waiting for the operator to observe generation %d", generation)
  else
    hs.message = string.format(
      "Waiting for the operator to observe generation %d (status is of generation %d)", generation, observed)
  end
  return hs
end

-- the conditions that are true for the current generation, by type
local current = {}
local accepted = nil
if type(status.conditions) == "table" then
  for _, cond in ipairs(status.conditions) do
    local cgen = num(cond.observedGeneration)
    local fresh = generation == nil or cgen == nil or cgen >= generation
    if fresh and type(cond.type) == "string" then
      if cond.status == "True" then
        current[cond.type] = cond
      end
      if cond.type == "Accepted" then
        accepted = cond
      end
    end
  end
end

if current.Progressing ~= nil then
  hs.status = "Progressing"
  hs.message = message(current.Progressing, status)
elseif current.Failed ~= nil then
  hs.status = "Degraded"
  hs.message = message(current.Failed, status)
elseif current.Degraded ~= nil then
  hs.status = "Degraded"
  hs.message = message(current.Degraded, status)
elseif current.Complete ~= nil then
  hs.status = "Healthy"
  hs.message = message(current.Complete, status)
elseif accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = message(accepted, status)
else
  hs.status = "Progressing"
  hs.message = "Waiting for the run to start"
  local c = counts(status)
  if c ~= nil then
    hs.message = hs.message .. "; " .. c
  end
end
return hs
