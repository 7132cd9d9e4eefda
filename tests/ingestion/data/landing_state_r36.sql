-- The landing state (schema tidemark) as round 36's Tidemark (01f93d6) wrote it after a
-- catch-up as tidemark_app: pg_dump --schema-only -n tidemark, without the schema itself,
-- its grants and the live-view engine's event-trigger functions (not ensure_state's).
-- tests/ingestion/test_state_upgrade.py loads it into a landing to test the upgrade.
--
-- PostgreSQL database dump
--
-- Name: tidemark; Type: SCHEMA; Schema: -; Owner: tidemark_app
--
-- Name: dead_letter_counts_delta_delete(); Type: FUNCTION; Schema: tidemark; Owner: tidemark_app
--

CREATE FUNCTION tidemark.dead_letter_counts_delta_delete() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
    insert into tidemark.dead_letter_counts (source, table_name, waiting)
    select d.source, d.table_name, sum(d.n)
      from (select source, table_name, 1 as n from (select * from tidemark.dead_letters where false) n where replayed_at is null
            union all
            select source, table_name, -1 from old_rows o where replayed_at is null) d
     group by d.source, d.table_name
    having sum(d.n) <> 0;
    return null;
end
$$;

ALTER FUNCTION tidemark.dead_letter_counts_delta_delete() OWNER TO tidemark_app;

--
-- Name: dead_letter_counts_delta_insert(); Type: FUNCTION; Schema: tidemark; Owner: tidemark_app
--

CREATE FUNCTION tidemark.dead_letter_counts_delta_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
    insert into tidemark.dead_letter_counts (source, table_name, waiting)
    select d.source, d.table_name, sum(d.n)
      from (select source, table_name, 1 as n from new_rows n where replayed_at is null
            union all
            select source, table_name, -1 from (select * from tidemark.dead_letters where false) o where replayed_at is null) d
     group by d.source, d.table_name
    having sum(d.n) <> 0;
    return null;
end
$$;

ALTER FUNCTION tidemark.dead_letter_counts_delta_insert() OWNER TO tidemark_app;

--
-- Name: dead_letter_counts_delta_truncate(); Type: FUNCTION; Schema: tidemark; Owner: tidemark_app
--

CREATE FUNCTION tidemark.dead_letter_counts_delta_truncate() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
    delete from tidemark.dead_letter_counts;
    return null;
end
$$;

ALTER FUNCTION tidemark.dead_letter_counts_delta_truncate() OWNER TO tidemark_app;

--
-- Name: dead_letter_counts_delta_update(); Type: FUNCTION; Schema: tidemark; Owner: tidemark_app
--

CREATE FUNCTION tidemark.dead_letter_counts_delta_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
    insert into tidemark.dead_letter_counts (source, table_name, waiting)
    select d.source, d.table_name, sum(d.n)
      from (select source, table_name, 1 as n from new_rows n where replayed_at is null
            union all
            select source, table_name, -1 from old_rows o where replayed_at is null) d
     group by d.source, d.table_name
    having sum(d.n) <> 0;
    return null;
end
$$;

ALTER FUNCTION tidemark.dead_letter_counts_delta_update() OWNER TO tidemark_app;

--
-- Name: checkpoints; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.checkpoints (
    source text NOT NULL,
    slot_name text NOT NULL,
    publication text NOT NULL,
    lsn pg_lsn,
    snapshot_lsn pg_lsn,
    snapshot_done_at timestamp with time zone,
    last_commit_at timestamp with time zone,
    last_applied_at timestamp with time zone,
    last_lag_ms double precision,
    rows_applied bigint DEFAULT 0 NOT NULL,
    rows_per_s double precision,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    landing_identity text
);

ALTER TABLE tidemark.checkpoints OWNER TO tidemark_app;

--
-- Name: dead_letter_counts; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.dead_letter_counts (
    source text NOT NULL,
    table_name text NOT NULL,
    waiting bigint NOT NULL
);

ALTER TABLE tidemark.dead_letter_counts OWNER TO tidemark_app;

--
-- Name: dead_letters; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.dead_letters (
    id bigint NOT NULL,
    source text NOT NULL,
    table_name text NOT NULL,
    lsn pg_lsn NOT NULL,
    commit_lsn pg_lsn NOT NULL,
    seq integer NOT NULL,
    op text NOT NULL,
    reason text NOT NULL,
    violations jsonb DEFAULT '[]'::jsonb NOT NULL,
    contract_version text,
    raw_row jsonb NOT NULL,
    commit_at timestamp with time zone,
    txid bigint,
    first_seen_at timestamp with time zone DEFAULT now() NOT NULL,
    replayed_at timestamp with time zone,
    replay_result text
);

ALTER TABLE tidemark.dead_letters OWNER TO tidemark_app;

--
-- Name: dead_letters_id_seq; Type: SEQUENCE; Schema: tidemark; Owner: tidemark_app
--

CREATE SEQUENCE tidemark.dead_letters_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE tidemark.dead_letters_id_seq OWNER TO tidemark_app;

--
-- Name: dead_letters_id_seq; Type: SEQUENCE OWNED BY; Schema: tidemark; Owner: tidemark_app
--

ALTER SEQUENCE tidemark.dead_letters_id_seq OWNED BY tidemark.dead_letters.id;

--
-- Name: duplicate_events; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.duplicate_events (
    source text NOT NULL,
    table_name text NOT NULL,
    dropped bigint DEFAULT 0 NOT NULL,
    last_dropped_at timestamp with time zone
);

ALTER TABLE tidemark.duplicate_events OWNER TO tidemark_app;

--
-- Name: freshness_histogram; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.freshness_histogram (
    source text NOT NULL,
    slot_start timestamp with time zone NOT NULL,
    bucket integer NOT NULL,
    samples bigint NOT NULL,
    max_ms double precision NOT NULL
);

ALTER TABLE tidemark.freshness_histogram OWNER TO tidemark_app;

--
-- Name: late_events; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.late_events (
    source text NOT NULL,
    table_name text NOT NULL,
    day date NOT NULL,
    late_rows bigint NOT NULL,
    worst_lateness interval NOT NULL,
    first_landed_at timestamp with time zone NOT NULL,
    last_landed_at timestamp with time zone NOT NULL
);

ALTER TABLE tidemark.late_events OWNER TO tidemark_app;

--
-- Name: lock_waits; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.lock_waits (
    source text NOT NULL,
    relation text NOT NULL,
    what text NOT NULL,
    since timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone,
    holders jsonb DEFAULT '[]'::jsonb NOT NULL,
    cancelled jsonb DEFAULT '[]'::jsonb NOT NULL
);

ALTER TABLE tidemark.lock_waits OWNER TO tidemark_app;

--
-- Name: paused_changes; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.paused_changes (
    source text NOT NULL,
    table_name text NOT NULL,
    commit_lsn pg_lsn NOT NULL,
    seq integer NOT NULL,
    lsn pg_lsn NOT NULL,
    op text NOT NULL,
    commit_at timestamp with time zone,
    txid bigint,
    row_data jsonb,
    old_data jsonb
);

ALTER TABLE tidemark.paused_changes OWNER TO tidemark_app;

--
-- Name: replicated_tables; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.replicated_tables (
    source text NOT NULL,
    table_name text NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    source_oid bigint,
    columns jsonb NOT NULL,
    key_columns text[] NOT NULL,
    version integer DEFAULT 1 NOT NULL,
    paused_at timestamp with time zone,
    paused_reason text,
    paused_lsn pg_lsn,
    snapshot_lsn pg_lsn,
    auto_resync boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE tidemark.replicated_tables OWNER TO tidemark_app;

--
-- Name: schema_history; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.schema_history (
    id bigint NOT NULL,
    source text NOT NULL,
    table_name text NOT NULL,
    lsn pg_lsn,
    change text NOT NULL,
    column_name text,
    detail text NOT NULL,
    action text NOT NULL,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE tidemark.schema_history OWNER TO tidemark_app;

--
-- Name: schema_history_id_seq; Type: SEQUENCE; Schema: tidemark; Owner: tidemark_app
--

CREATE SEQUENCE tidemark.schema_history_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE tidemark.schema_history_id_seq OWNER TO tidemark_app;

--
-- Name: schema_history_id_seq; Type: SEQUENCE OWNED BY; Schema: tidemark; Owner: tidemark_app
--

ALTER SEQUENCE tidemark.schema_history_id_seq OWNED BY tidemark.schema_history.id;

--
-- Name: snapshot_progress; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.snapshot_progress (
    source text NOT NULL,
    table_name text NOT NULL,
    snapshot_lsn pg_lsn,
    state text NOT NULL,
    rows_copied bigint DEFAULT 0 NOT NULL,
    rows_estimate bigint,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE tidemark.snapshot_progress OWNER TO tidemark_app;

--
-- Name: watermarks; Type: TABLE; Schema: tidemark; Owner: tidemark_app
--

CREATE TABLE tidemark.watermarks (
    source text NOT NULL,
    table_name text NOT NULL,
    event_column text NOT NULL,
    allowed_lateness interval NOT NULL,
    max_event_at timestamp with time zone,
    watermark timestamp with time zone,
    last_change_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE tidemark.watermarks OWNER TO tidemark_app;

--
-- Name: dead_letters id; Type: DEFAULT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.dead_letters ALTER COLUMN id SET DEFAULT nextval('tidemark.dead_letters_id_seq'::regclass);

--
-- Name: schema_history id; Type: DEFAULT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.schema_history ALTER COLUMN id SET DEFAULT nextval('tidemark.schema_history_id_seq'::regclass);

--
-- Name: checkpoints checkpoints_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.checkpoints
    ADD CONSTRAINT checkpoints_pkey PRIMARY KEY (source);

--
-- Name: dead_letters dead_letters_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.dead_letters
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (id);

--
-- Name: dead_letters dead_letters_source_table_name_commit_lsn_seq_key; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.dead_letters
    ADD CONSTRAINT dead_letters_source_table_name_commit_lsn_seq_key UNIQUE (source, table_name, commit_lsn, seq);

--
-- Name: duplicate_events duplicate_events_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.duplicate_events
    ADD CONSTRAINT duplicate_events_pkey PRIMARY KEY (source, table_name);

--
-- Name: freshness_histogram freshness_histogram_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.freshness_histogram
    ADD CONSTRAINT freshness_histogram_pkey PRIMARY KEY (source, slot_start, bucket);

--
-- Name: late_events late_events_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.late_events
    ADD CONSTRAINT late_events_pkey PRIMARY KEY (source, table_name, day);

--
-- Name: lock_waits lock_waits_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.lock_waits
    ADD CONSTRAINT lock_waits_pkey PRIMARY KEY (source);

--
-- Name: paused_changes paused_changes_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.paused_changes
    ADD CONSTRAINT paused_changes_pkey PRIMARY KEY (source, table_name, commit_lsn, seq);

--
-- Name: replicated_tables replicated_tables_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.replicated_tables
    ADD CONSTRAINT replicated_tables_pkey PRIMARY KEY (source, table_name);

--
-- Name: schema_history schema_history_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.schema_history
    ADD CONSTRAINT schema_history_pkey PRIMARY KEY (id);

--
-- Name: snapshot_progress snapshot_progress_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.snapshot_progress
    ADD CONSTRAINT snapshot_progress_pkey PRIMARY KEY (source, table_name);

--
-- Name: watermarks watermarks_pkey; Type: CONSTRAINT; Schema: tidemark; Owner: tidemark_app
--

ALTER TABLE ONLY tidemark.watermarks
    ADD CONSTRAINT watermarks_pkey PRIMARY KEY (source, table_name);

--
-- Name: dead_letter_counts_source; Type: INDEX; Schema: tidemark; Owner: tidemark_app
--

CREATE INDEX dead_letter_counts_source ON tidemark.dead_letter_counts USING btree (source);

--
-- Name: dead_letters_seen; Type: INDEX; Schema: tidemark; Owner: tidemark_app
--

CREATE INDEX dead_letters_seen ON tidemark.dead_letters USING btree (source, first_seen_at, id);

--
-- Name: dead_letters_waiting; Type: INDEX; Schema: tidemark; Owner: tidemark_app
--

CREATE INDEX dead_letters_waiting ON tidemark.dead_letters USING btree (source, table_name) WHERE (replayed_at IS NULL);

--
-- Name: dead_letters_waiting_seen; Type: INDEX; Schema: tidemark; Owner: tidemark_app
--

CREATE INDEX dead_letters_waiting_seen ON tidemark.dead_letters USING btree (source, first_seen_at, id) WHERE (replayed_at IS NULL);

--
-- Name: dead_letters dead_letter_counts_delete; Type: TRIGGER; Schema: tidemark; Owner: tidemark_app
--

CREATE TRIGGER dead_letter_counts_delete AFTER DELETE ON tidemark.dead_letters REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tidemark.dead_letter_counts_delta_delete();

--
-- Name: dead_letters dead_letter_counts_insert; Type: TRIGGER; Schema: tidemark; Owner: tidemark_app
--

CREATE TRIGGER dead_letter_counts_insert AFTER INSERT ON tidemark.dead_letters REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tidemark.dead_letter_counts_delta_insert();

--
-- Name: dead_letters dead_letter_counts_truncate; Type: TRIGGER; Schema: tidemark; Owner: tidemark_app
--

CREATE TRIGGER dead_letter_counts_truncate AFTER TRUNCATE ON tidemark.dead_letters FOR EACH STATEMENT EXECUTE FUNCTION tidemark.dead_letter_counts_delta_truncate();

--
-- Name: dead_letters dead_letter_counts_update; Type: TRIGGER; Schema: tidemark; Owner: tidemark_app
--

CREATE TRIGGER dead_letter_counts_update AFTER UPDATE ON tidemark.dead_letters REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tidemark.dead_letter_counts_delta_update();

--
-- Name: SCHEMA tidemark; Type: ACL; Schema: -; Owner: tidemark_app
--
-- PostgreSQL database dump complete
--


