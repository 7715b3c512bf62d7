hs = { status = "Progressing", message = "Waiting for controller" }
if obj.status == nil or obj.status.conditions == nil then return hs end
if obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Spec change not yet observed"; return hs end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then return { status = "Degraded", message = c.message } end
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" and c.status == "True" then return { status = "Healthy", message = c.message } end
  if c.type == "Ready" then hs.message = c.message end
end
return hs
