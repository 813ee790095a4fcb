-- A coordinator history of schema 2 (records as the JSON of the former pydantic models), written by
-- rankswarm 0.1.0 (commit ff8a4de): 3 rounds of tests/coordinator/test_store.py's _commit_rounds(seed=0),
-- a schema-2 status of peer a (with deciles), a schema-1 status of peer b, an open and a closed alert.
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,                   
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    message TEXT NOT NULL,               
    started_at REAL NOT NULL,
    started_round INTEGER NOT NULL,
    ended_at REAL,                       
    ended_round INTEGER
);
INSERT INTO "alerts" VALUES(1,'peer_behind:a','peer_behind','warning','a','a is 3 behind',101.0,2,NULL,NULL);
INSERT INTO "alerts" VALUES(2,'no_peers','no_peers','warning','','none',100.5,1,101.5,2);
CREATE TABLE contributions (
    peer_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    round INTEGER NOT NULL REFERENCES rounds(round),
    record TEXT NOT NULL,                
    PRIMARY KEY (peer_id, step)          
);
INSERT INTO "contributions" VALUES('a',0,1,'{"schema_version":1,"run":"test-run","peer_id":"a","step":0,"stats":{"moments":{"er":[6,130.7248643319191,3231.7957253919267],"erv":[6,1.521910571634666,6.502801716502487],"era":[6,1.9883523597961577,2.5514684798646208],"score":[6,-0.5,5.25]},"gate_sum":3.1062470927880597,"gate_count":6},"num_rollouts":8,"num_tokens":640,"published_at":1000.0}');
INSERT INTO "contributions" VALUES('b',0,1,'{"schema_version":1,"run":"test-run","peer_id":"b","step":0,"stats":{"moments":{"er":[6,125.56491609500176,3339.270030931262],"erv":[5,0.9562788801771238,6.669879821053335],"era":[5,2.075720698377136,1.3468263617272185],"score":[6,-1.5,3.75]},"gate_sum":3.4900398930712684,"gate_count":5},"num_rollouts":8,"num_tokens":640,"published_at":1000.0}');
INSERT INTO "contributions" VALUES('a',1,2,'{"schema_version":1,"run":"test-run","peer_id":"a","step":1,"stats":{"moments":{"er":[6,151.62869324356348,4369.819860739991],"erv":[6,2.7141669769185013,8.16778989991559],"era":[4,-0.43761555986228906,1.1755703345868225],"score":[6,-5.0,4.5]},"gate_sum":1.8439880703594231,"gate_count":4},"num_rollouts":8,"num_tokens":640,"published_at":1000.0}');
INSERT INTO "contributions" VALUES('b',1,2,'{"schema_version":1,"run":"test-run","peer_id":"b","step":1,"stats":{"moments":{"er":[6,113.67610729244475,3532.3181281023117],"erv":[4,-3.4165653731466943,8.878773641723495],"era":[4,-1.3587464576527035,1.5144343514279224],"score":[6,-2.5,2.25]},"gate_sum":2.233711283390315,"gate_count":4},"num_rollouts":8,"num_tokens":640,"published_at":1000.0}');
INSERT INTO "contributions" VALUES('a',2,3,'{"schema_version":1,"run":"test-run","peer_id":"a","step":2,"stats":{"moments":{"er":[6,163.39743986342705,5344.23015508008],"erv":[3,0.6395596049246253,0.4571989335068964],"era":[6,0.017454705785753255,2.226911313138886],"score":[6,-0.5,2.25]},"gate_sum":3.340725978682703,"gate_count":6},"num_rollouts":8,"num_tokens":640,"published_at":1000.0}');
INSERT INTO "contributions" VALUES('b',2,3,'{"schema_version":1,"run":"test-run","peer_id":"b","step":2,"stats":{"moments":{"er":[6,83.58924472694638,1539.2157601032723],"erv":[6,1.0689715983464962,4.8726487063752035],"era":[5,0.028614944298893663,2.4651659653577664],"score":[6,-2.0,3.0]},"gate_sum":2.8967754573425317,"gate_count":5},"num_rollouts":8,"num_tokens":640,"published_at":1000.0}');
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('run','test-run');
CREATE TABLE peers (
    peer_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_step INTEGER,                   
    status TEXT                          
, num_contributions INTEGER NOT NULL DEFAULT 0);
INSERT INTO "peers" VALUES('a',100.0,102.5,2,'{"schema_version":2,"run":"test-run","peer_id":"a","version":"0.1.0","address":"/ip4/1.2.3.4/tcp/5","reachability":"relayed","step":9,"throughput":1.5,"bytes_sent":10,"bytes_received":20,"reported_at":102.5,"tokens_per_s":812.5,"step_seconds":1.25,"compression_ratio":19.3,"reward":-0.25,"accuracy":0.5,"heldout_accuracy":0.39,"kl":0.0,"er":21.5,"erv":-0.5,"era":0.0,"gate":1.0,"aux":-0.01,"epoch":0,"num_peers_seen":3,"averaging_rounds":4,"averaging_failures":1,"last_averaging_error":"TimeoutError: x","publish_failures":2,"baselines_source":"global","balance_round":2,"deciles":{"er":{"count":5,"values":[0.0,1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0,9.0,10.0]}}}',3);
INSERT INTO "peers" VALUES('b',100.0,102.75,2,'{"schema_version":1,"run":"test-run","peer_id":"b","version":"0.0.9","address":"","reachability":"direct","step":2,"throughput":0.5,"bytes_sent":1,"bytes_received":2,"reported_at":102.75,"tokens_per_s":null,"step_seconds":null,"compression_ratio":null,"reward":null,"accuracy":null,"heldout_accuracy":null,"kl":null,"er":null,"erv":null,"era":null,"gate":null,"aux":null,"epoch":null,"num_peers_seen":null,"averaging_rounds":0,"averaging_failures":0,"last_averaging_error":"","publish_failures":0,"baselines_source":"unknown","balance_round":null,"deciles":{}}',3);
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY,
    issued_at REAL NOT NULL,
    num_peers INTEGER NOT NULL,
    num_contributions INTEGER NOT NULL,
    record TEXT NOT NULL                 
);
INSERT INTO "rounds" VALUES(1,100.0,2,2,'{"schema_version":1,"run":"test-run","round":1,"baselines":{"raw":{"er":6.407244510673022,"erv":0.06758698504941245,"era":0.11083835613199892,"score":-0.049999999999999996},"updates":{"er":1,"erv":1,"era":1,"score":1},"alpha":0.3,"corrected":true},"lambda_t":1.0,"mean_gate":0.5996624532599388,"explore_share":0.5996624532599388,"exploit_share":0.40033754674006117,"merged":{"moments":{"er":[12,256.28978042692086,6571.065756323189],"erv":[11,2.4781894518117897,13.172681537555823],"era":[11,4.064073058173294,3.8982948415918393],"score":[12,-2.0,9.0]},"gate_sum":6.596286985859328,"gate_count":11},"num_peers":2,"num_contributions":2,"issued_at":100.0,"coordinator_key":"k"}');
INSERT INTO "rounds" VALUES(2,101.0,2,2,'{"schema_version":1,"run":"test-run","round":2,"baselines":{"raw":{"er":11.11769117087132,"erv":0.026238937647742922,"era":0.010223273635587019,"score":-0.2225},"updates":{"er":2,"erv":2,"era":2,"score":2},"alpha":0.3,"corrected":true},"lambda_t":1.0,"mean_gate":0.5097124192187172,"explore_share":0.5097124192187172,"exploit_share":0.49028758078128276,"merged":{"moments":{"er":[12,265.3048005360082,7902.137988842303],"erv":[10,-0.702398396228193,17.046563541639085],"era":[8,-1.7963620175149926,2.6900046860147446],"score":[12,-7.5,6.75]},"gate_sum":4.077699353749738,"gate_count":8},"num_peers":2,"num_contributions":2,"issued_at":101.0,"coordinator_key":"k"}');
INSERT INTO "rounds" VALUES(3,102.0,2,2,'{"schema_version":1,"run":"test-run","round":3,"baselines":{"raw":{"er":13.95705093436926,"erv":0.07531829646245743,"era":0.008412736547219465,"score":-0.21825},"updates":{"er":3,"erv":3,"era":3,"score":3},"alpha":0.3,"corrected":true},"lambda_t":1.0,"mean_gate":0.5670455850932031,"explore_share":0.5670455850932031,"exploit_share":0.43295441490679687,"merged":{"moments":{"er":[12,246.98668459037344,6883.445915183353],"erv":[9,1.7085312032711215,5.3298476398821],"era":[11,0.04606965008464692,4.692077278496653],"score":[12,-2.5,5.25]},"gate_sum":6.2375014360252345,"gate_count":11},"num_peers":2,"num_contributions":2,"issued_at":102.0,"coordinator_key":"k"}');
CREATE TABLE statuses (
    peer_id TEXT NOT NULL,
    reported_at REAL NOT NULL,
    round INTEGER NOT NULL,              
    record TEXT NOT NULL,                
    PRIMARY KEY (peer_id, reported_at)   
);
INSERT INTO "statuses" VALUES('a',102.5,4,'{"schema_version":2,"run":"test-run","peer_id":"a","version":"0.1.0","address":"/ip4/1.2.3.4/tcp/5","reachability":"relayed","step":9,"throughput":1.5,"bytes_sent":10,"bytes_received":20,"reported_at":102.5,"tokens_per_s":812.5,"step_seconds":1.25,"compression_ratio":19.3,"reward":-0.25,"accuracy":0.5,"heldout_accuracy":0.39,"kl":0.0,"er":21.5,"erv":-0.5,"era":0.0,"gate":1.0,"aux":-0.01,"epoch":0,"num_peers_seen":3,"averaging_rounds":4,"averaging_failures":1,"last_averaging_error":"TimeoutError: x","publish_failures":2,"baselines_source":"global","balance_round":2,"deciles":{"er":{"count":5,"values":[0.0,1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0,9.0,10.0]}}}');
INSERT INTO "statuses" VALUES('b',102.75,4,'{"schema_version":1,"run":"test-run","peer_id":"b","version":"0.0.9","address":"","reachability":"direct","step":2,"throughput":0.5,"bytes_sent":1,"bytes_received":2,"reported_at":102.75,"tokens_per_s":null,"step_seconds":null,"compression_ratio":null,"reward":null,"accuracy":null,"heldout_accuracy":null,"kl":null,"er":null,"erv":null,"era":null,"gate":null,"aux":null,"epoch":null,"num_peers_seen":null,"averaging_rounds":0,"averaging_failures":0,"last_averaging_error":"","publish_failures":0,"baselines_source":"unknown","balance_round":null,"deciles":{}}');
CREATE INDEX contributions_by_round ON contributions(round);
CREATE INDEX statuses_by_round ON statuses(round);
CREATE INDEX statuses_by_time ON statuses(reported_at);
CREATE INDEX alerts_by_end ON alerts(ended_at);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alerts',2);
PRAGMA user_version=2;
