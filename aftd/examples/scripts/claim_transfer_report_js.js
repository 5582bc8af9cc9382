// Claim a job from the orchestrator, copy its file, and report the outcome durably (SyncJS).
// @name claim-transfer-report-js
//
// Trigger it with a job_id param. The orchestrator's base URL and bearer token are the secrets
// orch-api-url and orch-api-token. The report is owed from before the claim leaves
// (ReportIntent): unless the orchestrator refuses the claim, it receives exactly one report,
// "failed" if this job ends any other way than by reaching Submit - an error, a cancel, a
// timeout, even the daemon being killed. See README, "Running SyncJS scripts".

var orchJob = Params("job_id");
if (!orchJob) {
    Log.Error("the job_id parameter is required");
    Exit(2);
}

var jobUrl = GetSecret("orch-api-url").replace(/\/+$/, "") + "/jobs/" +
    encodeURIComponent(orchJob);

function outcome(status) {
    return { jobId: orchJob, status: status, agent: "aftd" };
}

var owed = ReportIntent(jobUrl + "/report", "orch-api-token", outcome("failed"));
var claim = HttpCli()
    .Url(jobUrl + "/claim")
    .Bearer(GetSecret("orch-api-token"))
    .Timeout(30)
    .Post(null);

if (!claim.Ok()) {
    // An HTTP answer refusing the claim means nothing was claimed: nothing to report. No answer
    // at all (status 0) leaves the claim's fate unknown, so "failed" stays owed.
    if (claim.StatusCode() !== 0) {
        owed.Void();
    }
    Log.Error("claim of " + orchJob + " failed: HTTP " + claim.StatusCode() + " " +
              claim.ErrorMsg());
    Exit(1);
}

var work = JSON.parse(claim.BodyAsString());
var copied = VirtualFSByName(work.sourceVfs)
    .CopyToVFS(work.sourcePath, VirtualFSByName(work.destVfs), work.destDir);

if (copied.Ok()) {
    Log.Info("copied " + work.sourceVfs + ":" + work.sourcePath + " to " + work.destVfs + ":" +
             work.destDir);
} else {
    Log.Error("transfer failed: " + copied.ErrorMsg());
}
owed.Submit(outcome(copied.Ok() ? "completed" : "failed"));
Exit(copied.Ok() ? 0 : 1);
