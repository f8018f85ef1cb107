-- conveyor schema v3. A job lost with its worker process twice in a row is a suspect: it runs
-- only alone, in a fresh process, so that a third death proves it a poison pill. Ordinary
-- claims skip suspects (lost_count < 2); this index finds them for the rare claim that wants
-- them without walking the ready jobs.
CREATE INDEX conveyor_jobs_suspect ON conveyor_jobs (queue, priority DESC, id)
    WHERE state = 'ready' AND lost_count >= 2;
