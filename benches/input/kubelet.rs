//! The `pods10_kubelet` input of `benches/elasticsearch.rs`: what containerd writes for the
//! applications of real pods (see that file's documentation), from a seeded PRNG over
//! vocabularies, so that the input is the same on every run and compresses as real logs do.

/// A small deterministic PRNG (SplitMix64): the same input on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.next() % 1000 < p
    }

    /// One of `items`, the first ones far more often (the smallest of three draws), as real
    /// vocabularies are used: a few messages, paths and statuses make most lines.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let n = items.len();
        let i = self.below(n).min(self.below(n)).min(self.below(n));
        &items[i]
    }
}

/// A CRI file being written, with what it holds.
pub struct CriFile {
    pub out: Vec<u8>,
    /// The runtime's clock: nanoseconds since 2026-11-22T00:00:00Z.
    pub ns: u64,
    pub records: u64,
    pub lines: u64,
    pub partial: u64,
}

/// The runtime's cut: containerd's `max_container_log_line_size` (16 KiB).
const CRI_CHUNK: usize = 16 * 1024;

impl CriFile {
    pub fn with_capacity(bytes: usize) -> CriFile {
        CriFile {
            out: Vec::with_capacity(bytes + 128 * 1024),
            ns: 10 * 3600 * 1_000_000_000,
            records: 0,
            lines: 0,
            partial: 0,
        }
    }

    /// Writes one record as the runtime does: one `F` line, or 16 KiB `P` chunks and an `F`
    /// with the rest.
    fn record(&mut self, stderr: bool, content: &[u8]) {
        let mut rest = content;
        while rest.len() > CRI_CHUNK {
            self.line(stderr, b'P', &rest[..CRI_CHUNK]);
            rest = &rest[CRI_CHUNK..];
            self.partial += 1;
            self.ns += 2_000;
        }
        self.line(stderr, b'F', rest);
        self.records += 1;
    }

    fn line(&mut self, stderr: bool, tag: u8, content: &[u8]) {
        rfc3339_nano(&mut self.out, self.ns);
        self.out
            .extend_from_slice(if stderr { b" stderr " } else { b" stdout " });
        self.out.push(tag);
        self.out.push(b' ');
        self.out.extend_from_slice(content);
        self.out.push(b'\n');
        self.lines += 1;
    }
}

/// containerd's timestamp: Go's RFC3339Nano, so trailing zeros of the fraction are left out
/// (and the fraction too when it is zero).
fn rfc3339_nano(out: &mut Vec<u8>, ns: u64) {
    out.extend_from_slice(b"2026-11-22T");
    hms(out, ns / 1_000_000_000, b':');
    let mut frac = ns % 1_000_000_000;
    if frac != 0 {
        let mut digits = 9;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        out.push(b'.');
        zero_padded(out, frac, digits);
    }
    out.push(b'Z');
}

fn hms(out: &mut Vec<u8>, secs_of_day: u64, sep: u8) {
    assert!(
        secs_of_day < 86_400,
        "the kubelet input stays within its day"
    );
    zero_padded(out, secs_of_day / 3600, 2);
    out.push(sep);
    zero_padded(out, secs_of_day / 60 % 60, 2);
    out.push(sep);
    zero_padded(out, secs_of_day % 60, 2);
}

fn zero_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let at = out.len();
    out.resize(at + width, b'0');
    for i in (at..at + width).rev() {
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn hex(out: &mut Vec<u8>, rng: &mut Rng, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = rng.next();
    for i in 0..digits {
        if i > 0 && i % 16 == 0 {
            bits = rng.next();
        }
        out.push(HEX[(bits & 15) as usize]);
        bits >>= 4;
    }
}

/// What the applications of one pod write, in records per thousand (the rest: plain text).
struct Profile {
    json: u64,
    access: u64,
    /// Java stack traces, each 10-60 lines.
    trace: u64,
    /// Records of 1-4 KB (a request body, a query).
    big: u64,
}

/// Pods of three kinds: an nginx in front, a Go service logging JSON, a JVM service.
const PROFILES: [Profile; 3] = [
    Profile {
        json: 120,
        access: 720,
        trace: 1,
        big: 10,
    },
    Profile {
        json: 780,
        access: 40,
        trace: 1,
        big: 25,
    },
    Profile {
        json: 300,
        access: 60,
        trace: 6,
        big: 15,
    },
];

/// Records over 16 KiB (split by the runtime): one in this many.
const HUGE_ONE_IN: u64 = 20_000;

/// The placeholders [`fill`] replaces: `{id}` (an order or product id), `{uid}` (a user id),
/// `{n}` (a small count), `{t}` (a thread), `{ms}` (milliseconds), `{amount}` (a price), `{hex8}`, `{uuid}`,
/// `{word}` (a product), `{ip}`, `{sku}`, `{path}` (an API path).
const JSON_MESSAGES: &[(&str, &str, &str)] = &[
    // (level, msg, further fields as a template)
    (
        "info",
        "request completed",
        r#","method":"GET","path":"{path}","status":200,"user_id":{uid},"duration_ms":{ms},"bytes":{id}"#,
    ),
    (
        "debug",
        "cache hit",
        r#","key":"product:{id}:v2","ttl_s":{n}"#,
    ),
    (
        "info",
        "order created",
        r#","order_id":{id},"user_id":{uid},"items":{n},"amount_cents":{id},"currency":"EUR""#,
    ),
    (
        "debug",
        "cache miss",
        r#","key":"cart:{uid}","backend":"redis-master.shop.svc:6379""#,
    ),
    (
        "info",
        "message consumed",
        r#","topic":"orders.events","partition":{n},"offset":{id},"lag":{n},"duration_ms":{ms}"#,
    ),
    (
        "warn",
        "slow query",
        r#","table":"orders","rows":{n},"duration_ms":{ms}{n},"query_id":"{hex8}""#,
    ),
    (
        "info",
        "payment authorized",
        r#","order_id":{id},"amount_cents":{id},"currency":"EUR","provider":"stripe","duration_ms":{ms}"#,
    ),
    (
        "info",
        "user authenticated",
        r#","user_id":{uid},"method":"oidc","client_ip":"{ip}""#,
    ),
    (
        "warn",
        "retrying upstream call",
        r#","upstream":"http://inventory.shop.svc:8080/api/v2/stock/{sku}","attempt":{n},"error":"context deadline exceeded (Client.Timeout exceeded while awaiting headers)""#,
    ),
    (
        "info",
        "inventory updated",
        r#","sku":"{sku}","qty":{n},"warehouse":"eu-west-1b""#,
    ),
    (
        "error",
        "upstream request failed",
        r#","upstream":"http://payments.shop.svc:8080/v1/charges","status":503,"error":"upstream connect error or disconnect/reset before headers. reset reason: connection failure","duration_ms":{ms}"#,
    ),
    (
        "error",
        "order validation failed",
        r#","order_id":{id},"user_id":{uid},"error":"address.postal_code: invalid format for country DE""#,
    ),
];

const JSON_INDEXES: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

const LOGGERS: &[(&str, &str)] = &[
    ("http.server", "server/handler.go"),
    ("orders.service", "orders/service.go"),
    ("cache.redis", "cache/redis.go"),
    ("kafka.consumer", "consumer/loop.go"),
    ("payments.client", "payments/client.go"),
    ("auth.middleware", "auth/jwt.go"),
    ("inventory.sync", "inventory/sync.go"),
    ("db.pool", "db/pool.go"),
];

const API_PATHS: &[&str] = &[
    "/api/v1/products/{id}",
    "/api/v1/orders/{id}",
    "/healthz",
    "/api/v1/users/{uid}/cart",
    "/api/v1/search?q={word}&page={n}",
    "/static/js/main.{hex8}.js",
    "/api/v1/recommendations?user={uid}&limit=20",
    "/api/v1/checkout",
    "/products/{word}-{id}",
    "/static/css/app.{hex8}.css",
    "/api/v2/inventory/{sku}",
    "/metrics",
    "/favicon.ico",
];

const WORDS: &[&str] = &[
    "shoes",
    "jacket",
    "coffee",
    "headphones",
    "backpack",
    "laptop",
    "watch",
    "phone+case",
    "desk+lamp",
    "running+socks",
    "espresso+machine",
    "charger",
];

const METHODS: &[&str] = &[
    "GET", "GET", "POST", "GET", "PUT", "DELETE", "PATCH", "HEAD",
];

const STATUSES: &[u16] = &[
    200, 200, 200, 200, 200, 200, 304, 200, 201, 200, 204, 404, 302, 400, 401, 499, 403, 500, 429,
    502, 503, 504,
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "kube-probe/1.34",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Prometheus/3.0.1",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

const REFERERS: &[&str] = &[
    "-",
    "https://shop.example.com/",
    "https://shop.example.com/cart",
    "https://www.google.com/",
    "https://shop.example.com/products/{word}-{id}",
    "https://shop.example.com/search?q={word}",
];

/// Plain-text lines: (stderr, template). Spring Boot, klog, Python logging, nginx's error log.
const PLAIN: &[(bool, &str)] = &[
    (false, "{spring}  INFO 1 --- [nio-8080-exec-{t}] c.e.shop.web.OrderController             : Order {id} placed for user {uid} ({n} items, total {amount} EUR)"),
    (false, "{spring}  INFO 1 --- [nio-8080-exec-{t}] c.e.shop.catalog.ProductService          : Fetched {n} products for category {word} in {ms} ms"),
    (true, "{python} INFO [celery.worker.strategy] Task tasks.send_confirmation[{uuid}] received"),
    (true, "{python} INFO [celery.app.trace] Task tasks.send_confirmation[{uuid}] succeeded in 0.0{ms}s: None"),
    (true, "I{klogtime}       1 reconciler.go:{n}] \"Reconciling\" object=\"shop/web-{hex8}\" generation={n}"),
    (false, "{spring} DEBUG 1 --- [io-8080-exec-{t}] o.s.web.servlet.DispatcherServlet        : Completed 200 OK"),
    (false, "{spring}  INFO 1 --- [   scheduling-1] c.e.shop.inventory.ReconcileJob          : Reconciled {n} SKUs against warehouse eu-west-1b in {ms} ms"),
    (false, "{spring}  INFO 1 --- [l-1 housekeeper] com.zaxxer.hikari.pool.HikariPool        : HikariPool-1 - Pool stats (total=10, active={n}, idle={n}, waiting=0)"),
    (true, "{nginxerr} [warn] 29#29: *{id} an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/{n}/{n}/00000{id} while reading upstream, client: {ip}, server: shop.example.com, request: \"GET {path} HTTP/1.1\", upstream: \"http://10.42.1.{n}:8080{path}\", host: \"shop.example.com\""),
    (true, "{spring}  WARN 1 --- [nio-8080-exec-{t}] c.e.shop.payment.PaymentClient           : Payment provider answered 429, retrying in {ms} ms (attempt {n} of 5)"),
    (true, "{nginxerr} [error] 29#29: *{id} upstream timed out (110: Connection timed out) while reading response header from upstream, client: {ip}, server: shop.example.com, request: \"POST /api/v1/checkout HTTP/1.1\", upstream: \"http://10.42.1.{n}:8080/api/v1/checkout\", host: \"shop.example.com\""),
    (true, "E{klogtime}       1 leaderelection.go:{n}] error retrieving resource lock shop/web-leader: Get \"https://10.96.0.1:443/apis/coordination.k8s.io/v1/namespaces/shop/leases/web-leader\": context deadline exceeded"),
];

const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "java.lang.IllegalStateException",
        "Order {id} cannot be shipped: status CANCELLED",
    ),
    (
        "java.lang.NullPointerException",
        "Cannot invoke \"com.example.shop.model.Customer.getAddress()\" because \"customer\" is null",
    ),
    (
        "org.springframework.dao.DataIntegrityViolationException",
        "could not execute statement [ERROR: duplicate key value violates unique constraint \"orders_pkey\" Detail: Key (id)=({id}) already exists.]",
    ),
    (
        "org.springframework.web.client.ResourceAccessException",
        "I/O error on POST request for \"http://payments.shop.svc:8080/v1/charges\": Read timed out",
    ),
];

const CAUSES: &[(&str, &str)] = &[
    (
        "java.sql.SQLTransientConnectionException",
        "HikariPool-1 - Connection is not available, request timed out after 30000ms (total=10, active=10, idle=0, waiting={n})",
    ),
    ("java.net.SocketTimeoutException", "Read timed out"),
    (
        "org.postgresql.util.PSQLException",
        "ERROR: canceling statement due to statement timeout",
    ),
];

const APP_FRAMES: &[&str] = &[
    "com.example.shop.order.OrderService.ship(OrderService.java:{n})",
    "com.example.shop.order.OrderService$$SpringCGLIB$$0.ship(<generated>)",
    "com.example.shop.web.OrderController.post(OrderController.java:{n})",
    "com.example.shop.payment.PaymentClient.charge(PaymentClient.java:{n})",
    "com.example.shop.order.OrderRepository.save(OrderRepository.java:{n})",
    "com.example.shop.customer.CustomerService.find(CustomerService.java:{n})",
];

/// A real trace's tail: the same framework frames, in this order, every time.
const FRAMEWORK_FRAMES: &[&str] = &[
    "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
    "java.base/java.lang.reflect.Method.invoke(Method.java:580)",
    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
    "org.springframework.web.method.support.InvocableHandlerMethod.invokeForRequest(InvocableHandlerMethod.java:188)",
    "org.springframework.web.servlet.mvc.method.annotation.ServletInvocableHandlerMethod.invokeAndHandle(ServletInvocableHandlerMethod.java:118)",
    "org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter.invokeHandlerMethod(RequestMappingHandlerAdapter.java:986)",
    "org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter.handleInternal(RequestMappingHandlerAdapter.java:891)",
    "org.springframework.web.servlet.mvc.method.AbstractHandlerMethodAdapter.handle(AbstractHandlerMethodAdapter.java:87)",
    "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1088)",
    "org.springframework.web.servlet.DispatcherServlet.doService(DispatcherServlet.java:978)",
    "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
    "org.springframework.web.servlet.FrameworkServlet.doPost(FrameworkServlet.java:914)",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:590)",
    "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:658)",
    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter(ApplicationFilterChain.java:195)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:140)",
    "org.apache.tomcat.websocket.server.WsFilter.doFilter(WsFilter.java:51)",
    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter(ApplicationFilterChain.java:164)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:140)",
    "org.springframework.web.filter.RequestContextFilter.doFilterInternal(RequestContextFilter.java:100)",
    "org.springframework.web.filter.OncePerRequestFilter.doFilter(OncePerRequestFilter.java:116)",
    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter(ApplicationFilterChain.java:164)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:140)",
    "org.springframework.web.filter.FormContentFilter.doFilterInternal(FormContentFilter.java:93)",
    "org.springframework.web.filter.OncePerRequestFilter.doFilter(OncePerRequestFilter.java:116)",
    "org.apache.catalina.core.StandardWrapperValve.invoke(StandardWrapperValve.java:167)",
    "org.apache.catalina.core.StandardContextValve.invoke(StandardContextValve.java:90)",
    "org.apache.catalina.authenticator.AuthenticatorBase.invoke(AuthenticatorBase.java:483)",
    "org.apache.catalina.core.StandardHostValve.invoke(StandardHostValve.java:115)",
    "org.apache.catalina.valves.ErrorReportValve.invoke(ErrorReportValve.java:93)",
    "org.apache.catalina.core.StandardEngineValve.invoke(StandardEngineValve.java:74)",
    "org.apache.catalina.connector.CoyoteAdapter.service(CoyoteAdapter.java:344)",
    "org.apache.coyote.http11.Http11Processor.service(Http11Processor.java:397)",
    "org.apache.coyote.AbstractProcessorLight.process(AbstractProcessorLight.java:63)",
    "org.apache.coyote.AbstractProtocol$ConnectionHandler.process(AbstractProtocol.java:905)",
    "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1741)",
    "org.apache.tomcat.util.net.SocketProcessorBase.run(SocketProcessorBase.java:52)",
    "org.apache.tomcat.util.threads.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1190)",
    "org.apache.tomcat.util.threads.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:659)",
    "org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:63)",
    "java.base/java.lang.Thread.run(Thread.java:1583)",
];

/// One pod's applications writing: the state behind [`kubelet_file`].
struct Pod {
    rng: Rng,
    profile: &'static Profile,
    /// Its clients: real traffic comes from a few addresses again and again.
    clients: Vec<String>,
    upstream: String,
    content: Vec<u8>,
    /// The application's clock for its own timestamps, a little behind the runtime's.
    ns: u64,
}

/// About `bytes` of what containerd writes for the applications of pod `f`: CRI lines with
/// increasing timestamps, on stdout and stderr, of JSON logs, access logs, plain text and Java
/// stack traces (one CRI line per line of the trace); most lines of 80-400 bytes, some of a few
/// KB, one record in [`HUGE_ONE_IN`] over 16 KiB, split as the runtime does.
pub fn kubelet_file(f: usize, bytes: usize) -> CriFile {
    let mut rng = Rng(0x6c6f_6773_6869_7000 ^ (f as u64).wrapping_mul(0x9E37_79B9));
    let clients = (0..300)
        .map(|i| {
            if i % 3 == 0 {
                format!("10.42.{}.{}", rng.range(0, 15), rng.range(2, 254))
            } else {
                format!(
                    "{}.{}.{}.{}",
                    rng.range(1, 223),
                    rng.range(0, 255),
                    rng.range(0, 255),
                    rng.range(1, 254)
                )
            }
        })
        .collect();
    let mut pod = Pod {
        rng,
        profile: &PROFILES[f % PROFILES.len()],
        clients,
        upstream: format!("10.42.{f}.{}:8080", 10 + f),
        content: Vec::with_capacity(128 * 1024),
        ns: 0,
    };
    let mut file = CriFile::with_capacity(bytes);
    file.ns += f as u64 * 13_000_000;
    while file.out.len() < bytes {
        // 20 µs to 1.5 ms between records: a busy pod, a thousand or two a second.
        file.ns += pod.rng.range(20_000, 1_500_000);
        pod.event(&mut file);
    }
    file
}

impl Pod {
    fn event(&mut self, file: &mut CriFile) {
        self.ns = file.ns - self.rng.range(5_000, 300_000);
        if self.rng.next().is_multiple_of(HUGE_ONE_IN) {
            let size = self.rng.range(17 * 1024, 80 * 1024) as usize;
            self.big_json(size);
            file.record(false, &self.content);
            return;
        }
        let roll = self.rng.next() % 1000;
        let p = self.profile;
        if roll < p.big {
            let size = self.rng.range(1024, 4096) as usize;
            self.big_json(size);
            file.record(self.rng.per_mille(200), &self.content);
        } else if roll < p.big + p.trace {
            self.trace(file);
        } else if roll < p.big + p.trace + p.json {
            let stderr = self.json();
            file.record(stderr, &self.content);
        } else if roll < p.big + p.trace + p.json + p.access {
            self.access();
            file.record(false, &self.content);
        } else {
            let (stderr, template) = *self.rng.pick(PLAIN);
            self.content.clear();
            self.fill(template);
            file.record(stderr, &self.content);
        }
    }

    /// Writes `template` into `content` with its placeholders replaced.
    fn fill(&mut self, template: &str) {
        let mut rest = template.as_bytes();
        while let Some(open) = memchr::memchr(b'{', rest) {
            self.content.extend_from_slice(&rest[..open]);
            rest = &rest[open + 1..];
            // A placeholder is a lowercase name in braces; any other brace is the text's.
            let name = rest
                .iter()
                .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit()))
                .filter(|&end| end > 0 && rest[end] == b'}');
            match name {
                Some(end) => {
                    let key = &rest[..end];
                    rest = &rest[end + 1..];
                    self.placeholder(key);
                }
                None => self.content.push(b'{'),
            }
        }
        self.content.extend_from_slice(rest);
    }

    fn placeholder(&mut self, key: &[u8]) {
        let secs = self.ns / 1_000_000_000;
        let millis = self.ns / 1_000_000 % 1000;
        let out = &mut self.content;
        match key {
            b"id" => num(out, self.rng.range(1_000, 999_999)),
            b"uid" => num(out, self.rng.range(1, 120_000)),
            b"n" => num(out, self.rng.range(1, 64)),
            // A worker thread's number.
            b"t" => num(out, self.rng.range(1, 10)),
            b"ms" => num(out, self.rng.range(1, 40) * self.rng.range(1, 25)),
            b"amount" => {
                num(out, self.rng.range(3, 400));
                out.push(b'.');
                zero_padded(out, self.rng.range(0, 99), 2);
            }
            b"hex8" => hex(out, &mut self.rng, 8),
            b"uuid" => {
                hex(out, &mut self.rng, 8);
                for _ in 0..3 {
                    out.push(b'-');
                    hex(out, &mut self.rng, 4);
                }
                out.push(b'-');
                hex(out, &mut self.rng, 12);
            }
            b"word" => out.extend_from_slice(self.rng.pick(WORDS).as_bytes()),
            b"ip" => out.extend_from_slice(self.rng.pick(&self.clients).as_bytes()),
            b"sku" => {
                out.extend_from_slice(b"SKU-");
                num(out, self.rng.range(10_000, 10_999));
            }
            b"path" => {
                let path = *self.rng.pick(API_PATHS);
                self.fill(path);
            }
            // Spring Boot: `2026-11-22T10:00:00.123Z  INFO`, with the level padded to 5.
            b"spring" => {
                out.extend_from_slice(b"2026-11-22T");
                hms(out, secs, b':');
                out.push(b'.');
                zero_padded(out, millis, 3);
                out.push(b'Z');
            }
            b"python" => {
                out.extend_from_slice(b"2026-11-22 ");
                hms(out, secs, b':');
                out.push(b',');
                zero_padded(out, millis, 3);
            }
            b"klogtime" => {
                out.extend_from_slice(b"1122 ");
                hms(out, secs, b':');
                out.push(b'.');
                zero_padded(out, self.ns / 1000 % 1_000_000, 6);
            }
            b"nginxerr" => {
                out.extend_from_slice(b"2026/11/22 ");
                hms(out, secs, b':');
            }
            other => panic!("unknown placeholder {}", String::from_utf8_lossy(other)),
        }
    }

    /// A structured log line as zap or logrus writes it; whether it goes to stderr.
    fn json(&mut self) -> bool {
        // Each message is written from one place in the code.
        let which = *self.rng.pick(&JSON_INDEXES);
        let (level, msg, fields) = JSON_MESSAGES[which];
        let (logger, file) = LOGGERS[which % LOGGERS.len()];
        self.content.clear();
        self.content.extend_from_slice(b"{\"level\":\"");
        self.content.extend_from_slice(level.as_bytes());
        self.content.extend_from_slice(b"\",\"ts\":\"");
        self.iso_millis();
        self.content.extend_from_slice(b"\",\"logger\":\"");
        self.content.extend_from_slice(logger.as_bytes());
        self.content.extend_from_slice(b"\",\"caller\":\"");
        self.content.extend_from_slice(file.as_bytes());
        self.content.push(b':');
        num(&mut self.content, 40 + 37 * which as u64);
        self.content.extend_from_slice(b"\",\"msg\":\"");
        self.content.extend_from_slice(msg.as_bytes());
        self.content.push(b'"');
        if self.rng.per_mille(600) {
            self.content.extend_from_slice(b",\"request_id\":\"");
            hex(&mut self.content, &mut self.rng, 32);
            self.content.push(b'"');
        }
        self.fill(fields);
        if self.rng.per_mille(250) {
            self.content.extend_from_slice(b",\"trace_id\":\"");
            hex(&mut self.content, &mut self.rng, 32);
            self.content.extend_from_slice(b"\",\"span_id\":\"");
            hex(&mut self.content, &mut self.rng, 16);
            self.content.push(b'"');
        }
        self.content.push(b'}');
        level == "error"
    }

    fn iso_millis(&mut self) {
        let out = &mut self.content;
        out.extend_from_slice(b"2026-11-22T");
        hms(out, self.ns / 1_000_000_000, b':');
        out.push(b'.');
        zero_padded(out, self.ns / 1_000_000 % 1000, 3);
        out.push(b'Z');
    }

    /// An ingress-nginx access log line (its default `log_format upstreaminfo`): a third are
    /// the kubelet's probes and Prometheus's scrapes, the rest clients'.
    fn access(&mut self) {
        self.content.clear();
        let roll = self.rng.next() % 100;
        let (client, method, path, status, bytes, agent, referer): (&str, _, _, u16, u64, _, _) =
            if roll < 25 {
                (
                    "10.42.0.1",
                    "GET",
                    "/healthz",
                    200,
                    2,
                    "kube-probe/1.34",
                    "-",
                )
            } else if roll < 33 {
                let bytes = self.rng.range(9_000, 9_400);
                (
                    "10.42.3.17",
                    "GET",
                    "/metrics",
                    200,
                    bytes,
                    "Prometheus/3.0.1",
                    "-",
                )
            } else {
                let client = self.rng.below(self.clients.len());
                let status = *self.rng.pick(STATUSES);
                let bytes = match status {
                    204 | 304 => 0,
                    _ => self.rng.range(1, 40) * self.rng.range(10, 800),
                };
                (
                    self.clients[client].as_str(),
                    *self.rng.pick(METHODS),
                    *self.rng.pick(API_PATHS),
                    status,
                    bytes,
                    *self.rng.pick(USER_AGENTS),
                    *self.rng.pick(REFERERS),
                )
            };
        let client = client.to_string();
        self.content.extend_from_slice(client.as_bytes());
        self.content.extend_from_slice(b" - - [22/Nov/2026:");
        hms(&mut self.content, self.ns / 1_000_000_000, b':');
        self.content.extend_from_slice(b" +0000] \"");
        self.content.extend_from_slice(method.as_bytes());
        self.content.push(b' ');
        self.fill(path);
        self.content.extend_from_slice(b" HTTP/1.1\" ");
        num(&mut self.content, status as u64);
        self.content.push(b' ');
        num(&mut self.content, bytes);
        self.content.extend_from_slice(b" \"");
        self.fill(referer);
        self.content.extend_from_slice(b"\" \"");
        self.content.extend_from_slice(agent.as_bytes());
        self.content.extend_from_slice(b"\" ");
        num(&mut self.content, self.rng.range(80, 1200));
        let ms = self.rng.range(1, 40) * self.rng.range(1, 25);
        self.content.extend_from_slice(b" 0.");
        zero_padded(&mut self.content, ms.min(999), 3);
        self.content.extend_from_slice(b" [shop-web-8080] [] ");
        self.content.extend_from_slice(self.upstream.as_bytes());
        self.content.push(b' ');
        num(&mut self.content, bytes);
        self.content.extend_from_slice(b" 0.");
        zero_padded(&mut self.content, ms.saturating_sub(1).min(999), 3);
        self.content.push(b' ');
        num(&mut self.content, status as u64);
        self.content.push(b' ');
        hex(&mut self.content, &mut self.rng, 32);
    }

    /// A JSON record of about `size` bytes: a cart or a query dumped whole.
    fn big_json(&mut self, size: usize) {
        let (logger, file) = *self.rng.pick(LOGGERS);
        self.content.clear();
        self.content
            .extend_from_slice(b"{\"level\":\"warn\",\"ts\":\"");
        self.iso_millis();
        self.content.extend_from_slice(b"\",\"logger\":\"");
        self.content.extend_from_slice(logger.as_bytes());
        self.content.extend_from_slice(b"\",\"caller\":\"");
        self.content.extend_from_slice(file.as_bytes());
        self.content.extend_from_slice(b":311\",\"request_id\":\"");
        hex(&mut self.content, &mut self.rng, 32);
        if self.rng.per_mille(500) {
            self.fill(r#"","msg":"cart rejected by pricing rules","user_id":{uid},"cart":["#);
            let mut first = true;
            while self.content.len() + 80 < size {
                if !first {
                    self.content.push(b',');
                }
                first = false;
                self.fill(r#"{"sku":"{sku}","name":"{word}","qty":{n},"price_cents":{id}}"#);
            }
            self.content.extend_from_slice(b"]}");
        } else {
            self.content
                .extend_from_slice(b"\",\"msg\":\"slow query\",\"duration_ms\":");
            num(&mut self.content, self.rng.range(500, 9000));
            self.content.extend_from_slice(b",\"query\":\"SELECT o.id, o.status, o.created_at, o.total_cents, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id IN (");
            let mut first = true;
            while self.content.len() + 40 < size {
                if !first {
                    self.content.extend_from_slice(b", ");
                }
                first = false;
                num(&mut self.content, self.rng.range(1_000, 999_999));
            }
            self.content
                .extend_from_slice(b") ORDER BY o.created_at DESC\"}");
        }
    }

    /// A Spring Boot ERROR line and the stack trace after it, each line its own record.
    fn trace(&mut self, file: &mut CriFile) {
        let stderr = self.rng.per_mille(500);
        let (exception, message) = *self.rng.pick(EXCEPTIONS);
        self.trace_line(file, stderr, &[], "{spring} ERROR 1 --- [nio-8080-exec-{t}] o.a.c.c.C.[.[.[/].[dispatcherServlet]    : Servlet.service() for servlet [dispatcherServlet] in context with path [] threw exception");
        self.trace_line(file, stderr, &[exception, ": "], message);
        for _ in 0..self.rng.range(2, 6) {
            let frame = *self.rng.pick(APP_FRAMES);
            self.trace_line(file, stderr, &["\tat "], frame);
        }
        let framework = self.rng.range(8, FRAMEWORK_FRAMES.len() as u64) as usize;
        for frame in &FRAMEWORK_FRAMES[FRAMEWORK_FRAMES.len() - framework..] {
            self.trace_line(file, stderr, &["\tat "], frame);
        }
        if self.rng.per_mille(500) {
            let (cause, message) = *self.rng.pick(CAUSES);
            self.trace_line(file, stderr, &["Caused by: ", cause, ": "], message);
            for _ in 0..self.rng.range(3, 8) {
                let frame = *self.rng.pick(APP_FRAMES);
                self.trace_line(file, stderr, &["\tat "], frame);
            }
            let more = format!("{}", framework as u64 + self.rng.range(1, 4));
            self.trace_line(file, stderr, &["\t... ", &more], " more");
        }
    }

    /// One line of a trace: `parts`, then `template` filled, a few microseconds after the last.
    fn trace_line(&mut self, file: &mut CriFile, stderr: bool, parts: &[&str], template: &str) {
        self.content.clear();
        for part in parts {
            self.content.extend_from_slice(part.as_bytes());
        }
        self.fill(template);
        file.ns += self.rng.range(1_000, 20_000);
        file.record(stderr, &self.content);
    }
}
