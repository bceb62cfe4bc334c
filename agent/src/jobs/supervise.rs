//! Keeping a job's lease while one of its steps runs: a progress report
//! every heartbeat interval renews it; a refusal, a dropped lease or a
//! lease that runs out while the commander is unreachable stops the step.

use super::*;

/// The lease-keeping side of a job: while `task` works, report progress
/// every interval (renewing the lease), stop it when the lease is dropped,
/// refused, or runs out while the commander is unreachable.
pub(super) struct Supervisor<'a> {
    pub(super) ctx: &'a JobContext,
    pub(super) lease: &'a HeldLease,
    pub(super) client: AgentSessionClient<Channel>,
    pub(super) deadline: Instant,
    pub(super) progress: &'a Arc<Progress>,
    pub(super) drop_lease: &'a Notify,
}

impl Supervisor<'_> {
    pub(super) async fn watch<T: Send + 'static>(
        &mut self,
        mut task: JoinHandle<std::result::Result<T, Stop>>,
    ) -> std::result::Result<T, Stop> {
        let mut ticker = tokio::time::interval(self.ctx.progress_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // Rate since the previous report.
        let mut last = (Instant::now(), self.progress.done.load(Ordering::Relaxed));
        loop {
            tokio::select! {
                joined = &mut task => {
                    return joined.unwrap_or_else(|e| Err(Stop::Fail(failure(format!("job task failed: {e}"), true))));
                }
                _ = self.drop_lease.notified() => {
                    task.abort();
                    return Err(Stop::Abandon(Abandon::Dropped));
                }
                _ = ticker.tick() => {
                    let done = self.progress.done.load(Ordering::Relaxed);
                    let elapsed = last.0.elapsed().as_secs_f64();
                    let rate = if elapsed > 0.0 { (done.saturating_sub(last.1) as f64 / elapsed) as u64 } else { 0 };
                    last = (Instant::now(), done);
                    // A report that hangs (a partition drops packets, it
                    // does not refuse them) counts as unreachable once the
                    // lease would have run out.
                    let left = self.deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
                    let reported = tokio::time::timeout(left, report(&mut self.client, self.lease, self.progress, rate))
                        .await
                        .unwrap_or_else(|_| Err(AgentError::rpc("progress report", tonic::Status::deadline_exceeded("no answer before the lease ran out"))));
                    match reported {
                        Ok(ttl) => self.deadline = Instant::now() + ttl,
                        Err(e) if e.is_refusal() => {
                            // The task may have just finished the run itself
                            // (a landing ends the lease): its word wins.
                            if task.is_finished() {
                                return (&mut task).await.unwrap_or_else(|e| Err(Stop::Fail(failure(e.to_string(), true))));
                            }
                            task.abort();
                            return Err(Stop::Abandon(Abandon::Refused(e.to_string())));
                        }
                        Err(e) => {
                            if Instant::now() >= self.deadline {
                                task.abort();
                                return Err(Stop::Abandon(Abandon::Expired));
                            }
                            warn!(run = self.lease.run_id, "progress report failed, job continues: {e}");
                        }
                    }
                }
            }
        }
    }
}

/// Reports progress on `lease`; Ok carries the renewed time to live.
pub(super) async fn report(
    client: &mut AgentSessionClient<Channel>,
    lease: &HeldLease,
    progress: &Progress,
    bytes_per_second: u64,
) -> Result<Duration> {
    let response = client
        .report_progress(ProgressRequest {
            lease: Some(lease.lease_ref()),
            bytes_done: progress.done.load(Ordering::Relaxed),
            bytes_total: progress.total.load(Ordering::Relaxed),
            bytes_per_second,
        })
        .await
        .map_err(|status| AgentError::rpc("progress report", status))?;
    Ok(Duration::from_millis(response.into_inner().ttl_ms))
}
