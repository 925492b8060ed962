-- wrk script: POST the file named by WRK_BODY_FILE as application/json.
-- wrk loads this script once per thread and once for setup, so the body
-- is read at load time and every request reuses the same bytes.
local path = os.getenv("WRK_BODY_FILE")
if path == nil or path == "" then
   error("WRK_BODY_FILE is not set: name the JSON file to POST")
end
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
