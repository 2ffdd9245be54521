// Drives Segment's analytics-java, unchanged, against a Segment-compatible endpoint (ingest), as a store's
// Java server would: an identify and an order, flushed, then a JSON report on stdout of every request the
// library made (method, path, status) and every message it gave up on. Run as a single-file program:
//   java -cp 'tests/java/libs/*' tests/java/SegmentJavaClient.java <endpoint> <write key> <user id> <email>
import com.google.gson.Gson;
import com.segment.analytics.Analytics;
import com.segment.analytics.Callback;
import com.segment.analytics.messages.IdentifyMessage;
import com.segment.analytics.messages.Message;
import com.segment.analytics.messages.TrackMessage;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;

public class SegmentJavaClient {
  public static void main(String[] args) throws Exception {
    String endpoint = args[0];
    String writeKey = args[1];
    String userId = args[2];
    String email = args[3];
    List<String> requests = Collections.synchronizedList(new ArrayList<>());
    List<String> failures = Collections.synchronizedList(new ArrayList<>());
    CountDownLatch settled = new CountDownLatch(2);
    OkHttpClient client =
        new OkHttpClient.Builder()
            .addInterceptor(
                chain -> {
                  Request request = chain.request();
                  Response response = chain.proceed(request);
                  requests.add(request.method() + " " + request.url().encodedPath() + " " + response.code());
                  return response;
                })
            .build();
    Analytics analytics =
        Analytics.builder(writeKey)
            .endpoint(endpoint)
            .client(client)
            .retries(1)
            .callback(
                new Callback() {
                  @Override
                  public void success(Message message) {
                    settled.countDown();
                  }

                  @Override
                  public void failure(Message message, Throwable error) {
                    failures.add(message.type() + ": " + error);
                    settled.countDown();
                  }
                })
            .build();
    Map<String, Object> traits = new LinkedHashMap<>();
    traits.put("email", email);
    traits.put("firstName", "Jana");
    analytics.enqueue(IdentifyMessage.builder().userId(userId).traits(traits));
    Map<String, Object> product = new LinkedHashMap<>();
    product.put("product_id", "p-huila-250");
    product.put("name", "Colombia Huila");
    product.put("price", 14.5);
    product.put("quantity", 2);
    Map<String, Object> order = new LinkedHashMap<>();
    order.put("order_id", userId + "-1");
    order.put("total", 29.0);
    order.put("currency", "EUR");
    order.put("products", List.of(product));
    analytics.enqueue(TrackMessage.builder("Order Completed").userId(userId).properties(order));
    analytics.flush();
    boolean done = settled.await(60, TimeUnit.SECONDS);
    analytics.shutdown();
    Map<String, Object> report = new LinkedHashMap<>();
    report.put("settled", done);
    report.put("requests", requests);
    report.put("failures", failures);
    System.out.println(new Gson().toJson(report));
  }
}
