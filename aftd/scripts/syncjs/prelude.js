// aftd's SyncJS host API, evaluated before each SyncJS script (README, "Running SyncJS scripts").
//
// Every call into the daemon goes through one Python callable, __aftd_host(op, argsJson), which
// answers JSON: {"v": value}, {} for undefined, or {"e": message}. Its own eval keeps the script's line numbers its
// own. An error thrown inside an API function is re-stacked at the script's call (see api()), so
// the first frame of every error is the script's line.
(function (global) {
    "use strict";

    var host = global.__aftd_host;
    delete global.__aftd_host;

    function call(op, args) {
        var answer = JSON.parse(host(op, JSON.stringify(args)));
        if (answer.e !== undefined) {
            throw new Error(answer.e);
        }
        return answer.v;
    }

    // fn as a public API function: errors it throws point at the script's call.
    function api(name, fn) {
        var wrapper = function () {
            try {
                return fn.apply(this, arguments);
            } catch (e) {
                if (e instanceof Error) {
                    Error.captureStackTrace(e, wrapper);
                }
                throw e;
            }
        };
        Object.defineProperty(wrapper, "name", { value: name });
        return wrapper;
    }

    // A SyncJS function aftd does not provide: calling it fails the job (a try/catch cannot
    // swallow it) with an error naming the function and the script's line.
    function unsupported(name) {
        var stub = function () {
            var where = {};
            Error.captureStackTrace(where, stub);
            call("unsupported", { name: name, stack: String(where.stack) });
        };
        return stub;
    }

    // An object whose unknown SyncJS-style (capitalised) methods are unsupported(), not
    // "not a function".
    function strict(kind, obj) {
        return new Proxy(obj, {
            get: function (target, prop, receiver) {
                if (typeof prop !== "string" || prop in target || !/^[A-Z]/.test(prop)) {
                    return Reflect.get(target, prop, receiver);
                }
                return unsupported(kind + "." + prop);
            }
        });
    }

    function text(value, what) {
        if (typeof value === "string") {
            return value;
        }
        if (typeof value === "number" && isFinite(value)) {
            return String(value);
        }
        throw new TypeError(what + " must be a string, got " + describe(value));
    }

    function describe(value) {
        return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
    }

    function show(value) {
        if (typeof value === "string") {
            return value;
        }
        if (value instanceof Error) {
            return String(value);
        }
        if (value !== null && typeof value === "object") {
            try {
                return JSON.stringify(value);
            } catch (e) {
                return String(value);
            }
        }
        return String(value);
    }

    function joined(args) {
        return Array.prototype.map.call(args, show).join(" ");
    }

    function define(name, value) {
        Object.defineProperty(global, name, { value: value, writable: true, configurable: true });
    }

    // -- job ------------------------------------------------------------------------------
    define("Params", api("Params", function (name) {
        return call("params", { name: text(name, "Params: name") });
    }));
    define("GetSecret", api("GetSecret", function (name) {
        return call("secret", { name: text(name, "GetSecret: name") });
    }));
    define("Exit", api("Exit", function (code) {
        call("exit", { code: code === undefined ? 0 : code });
    }));
    define("Sleep", api("Sleep", function (ms) {
        call("sleep", { ms: ms });
    }));
    // A cancel or timeout ends the script's process, so a script never sees a halt signal.
    define("HaltSignalReceived", api("HaltSignalReceived", function () {
        return false;
    }));

    // -- logging ---------------------------------------------------------------------------
    function logger(level, source) {
        return api(source, function () {
            call("log", { level: level, source: source, msg: joined(arguments) });
        });
    }
    var Log = logger("info", "Log");
    Log.Debug = logger("debug", "Log.Debug");
    Log.Info = logger("info", "Log.Info");
    Log.Warn = logger("warning", "Log.Warn");
    Log.Error = logger("error", "Log.Error");
    define("Log", Log);
    define("console", {
        log: logger("info", "console.log"),
        info: logger("info", "console.info"),
        debug: logger("debug", "console.debug"),
        warn: logger("warning", "console.warn"),
        error: logger("error", "console.error")
    });

    // -- HTTP ------------------------------------------------------------------------------
    function httpBody(body, headers) {
        if (body === undefined || body === null) {
            return null;
        }
        if (typeof body === "string") {
            return body;
        }
        var hasType = Object.keys(headers).some(function (k) {
            return k.toLowerCase() === "content-type";
        });
        if (!hasType) {
            headers["Content-Type"] = "application/json";
        }
        return typeof body === "object" ? JSON.stringify(body) : String(body);
    }

    function httpResponse(r) {
        return strict("HttpResponse", {
            Ok: function () { return r.status >= 200 && r.status < 300; },
            StatusCode: function () { return r.status; },
            BodyAsString: function () { return r.body; },
            Header: function (name) {
                var value = r.headers[String(name).toLowerCase()];
                return value === undefined ? "" : value;
            },
            ErrorMsg: function () { return r.error; }
        });
    }

    define("HttpCli", api("HttpCli", function () {
        var req = { url: null, headers: {}, timeout: null };
        var self;
        function send(method, body) {
            if (req.url === null) {
                throw new Error("HttpCli." + method + ": no Url() was given");
            }
            var headers = Object.assign({}, req.headers);
            var data = httpBody(body, headers);
            return httpResponse(call("http", { method: method, url: req.url, headers: headers,
                                               timeout: req.timeout, body: data }));
        }
        self = strict("HttpCli", {
            Url: api("Url", function (url) { req.url = text(url, "HttpCli.Url"); return self; }),
            Bearer: api("Bearer", function (token) {
                req.headers.Authorization = "Bearer " + text(token, "HttpCli.Bearer");
                return self;
            }),
            Header: api("Header", function (name, value) {
                req.headers[text(name, "HttpCli.Header: name")] =
                    text(value, "HttpCli.Header: value");
                return self;
            }),
            Timeout: api("Timeout", function (seconds) {
                if (typeof seconds !== "number" || !(seconds > 0) || !isFinite(seconds)) {
                    throw new TypeError("HttpCli.Timeout: seconds must be a positive number");
                }
                req.timeout = seconds;
                return self;
            }),
            Get: api("Get", function () { return send("GET", null); }),
            Post: api("Post", function (body) { return send("POST", body); }),
            Put: api("Put", function (body) { return send("PUT", body); }),
            Delete: api("Delete", function () { return send("DELETE", null); })
        });
        return self;
    }));

    // -- VFS -------------------------------------------------------------------------------
    var vfsNames = new WeakMap();

    function result(r) {
        return strict("Result", {
            Ok: function () { return r.ok; },
            ErrorMsg: function () { return r.error; }
        });
    }

    // A copy that fails for any reason returns a failed result: scripts branch on Ok().
    function copyTo(name, path, dst, dstDir, options) {
        try {
            var dstName = vfsNames.get(dst);
            if (dstName === undefined) {
                throw new TypeError("the destination must be a VFS from VirtualFSByName, got " +
                                    describe(dst));
            }
            return result(call("vfs.copy", {
                src: name, path: text(path, "path"), dst: dstName,
                dir: text(dstDir, "destination directory"), options: options || {}
            }));
        } catch (e) {
            return result({ ok: false, error: "CopyToVFS: " + String(e.message || e) });
        }
    }

    function vfsObject(name) {
        var self = strict("VirtualFS", {
            Name: function () { return name; },
            CopyToVFS: api("CopyToVFS", function (path, dst, dstDir, options) {
                return copyTo(name, path, dst, dstDir, options);
            }),
            ListDir: api("ListDir", function (path) {
                return call("vfs.list", { vfs: name, path: text(path, "ListDir: path") });
            }),
            Stat: api("Stat", function (path) {
                var info = call("vfs.stat", { vfs: name, path: text(path, "Stat: path") });
                return info === undefined ? null : info;
            }),
            MakeDir: api("MakeDir", function (path) {
                return result(call("vfs.mkdir", { vfs: name, path: text(path, "MakeDir: path") }));
            }),
            DelFile: api("DelFile", function (path) {
                return result(call("vfs.delete", { vfs: name, path: text(path, "DelFile: path") }));
            }),
            Rename: api("Rename", function (from, to) {
                return result(call("vfs.rename", { vfs: name, from: text(from, "Rename: from"),
                                                   to: text(to, "Rename: to") }));
            })
        });
        vfsNames.set(self, name);
        return self;
    }

    define("VirtualFSByName", api("VirtualFSByName", function (name) {
        return vfsObject(call("vfs.open", { name: text(name, "VirtualFSByName: name") }));
    }));

    // -- durable reports -------------------------------------------------------------------
    function reportBody(body, what) {
        var value = typeof body === "string" ? JSON.parse(body) : body;
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
            throw new TypeError(what + " must be a JSON object (or its text), got " +
                                describe(value));
        }
        return value;
    }

    define("ReportDurably", api("ReportDurably", function (url, tokenSecret, body) {
        call("report.now", { url: text(url, "ReportDurably: url"),
                             tokenSecret: tokenSecret == null ? null : text(tokenSecret,
                                 "ReportDurably: token secret name"),
                             body: reportBody(body, "ReportDurably: body") });
        return true;
    }));

    define("ReportIntent", api("ReportIntent", function (url, tokenSecret, failureBody) {
        var id = call("report.intent", {
            url: text(url, "ReportIntent: url"),
            tokenSecret: tokenSecret == null ? null : text(tokenSecret,
                "ReportIntent: token secret name"),
            failureBody: reportBody(failureBody, "ReportIntent: failure body")
        });
        return strict("ReportIntent", {
            Submit: api("Submit", function (body) {
                call("report.submit", { id: id, body: reportBody(body, "Submit: body") });
                return true;
            }),
            Void: api("Void", function () {
                return call("report.void", { id: id });
            })
        });
    }));

    // -- SyncJS functions aftd does not provide ----------------------------------------------
    call("unsupported.names", {}).forEach(function (name) {
        define(name, unsupported(name));
    });
})(globalThis);
