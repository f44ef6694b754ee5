// Reads every expected key through one hello-streams instance with ioredis (a Node client,
// RESP2), as a plain (non-cluster) client would; exits 0 only if every answer is right.
// usage: node ioredis_read.js PORT EXPECTED_JSON [PASSWORD]
const fs = require("fs");
const Redis = require("ioredis");

async function main() {
  const [port, expectedPath, password] = process.argv.slice(2);
  const expected = JSON.parse(fs.readFileSync(expectedPath, "utf8"));
  const redis = new Redis({ host: "127.0.0.1", port: Number(port), password, lazyConnect: true,
    maxRetriesPerRequest: 0, enableOfflineQueue: false });
  await redis.connect();
  const keys = Object.keys(expected).sort();
  let right = 0;
  const wrong = [];
  // 100 requests in flight at a time: ioredis pipelines them on its one connection.
  for (let i = 0; i < keys.length; i += 100) {
    const chunk = keys.slice(i, i + 100);
    const counts = await Promise.all(chunk.map((k) => redis.get(k)));
    chunk.forEach((k, j) => {
      if (counts[j] === String(expected[k][0])) right++;
      else if (wrong.length < 5) wrong.push({ key: k, got: counts[j], want: expected[k][0] });
    });
  }
  const hash = await redis.hgetall(keys[0]);
  const hashRight = hash.helloTotalCount === String(expected[keys[0]][1]);
  console.log(JSON.stringify({ ioredis: require("ioredis/package.json").version, keys: keys.length,
    get_right: right, hgetall_right: hashRight, wrong }));
  redis.disconnect();
  process.exit(right === keys.length && hashRight ? 0 : 1);
}

main().catch((e) => { console.error(e); process.exit(2); });
