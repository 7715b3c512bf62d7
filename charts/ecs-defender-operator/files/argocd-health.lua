-- Argo CD health of an ecsdefender.io EcsDefenderDeployment; tests/gitops_health.rs runs it on
-- live objects. Order: an unobserved spec change, then Stalled, then suspension, then Ready.
hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.conditions == nil then return hs end
if obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Spec change not yet observed"; return hs end
local ready = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then return { status = "Degraded", message = c.message } end
  if c.type == "Ready" then ready = c end
end
if ready == nil then return hs end
-- spec.suspend: the operator changes nothing; Ready keeps the last health, reason Suspended.
if ready.reason == "Suspended" then return { status = "Suspended", message = ready.message } end
if ready.status == "True" then return { status = "Healthy", message = ready.message } end
hs.message = ready.message
return hs
