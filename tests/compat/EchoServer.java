// EchoServer: a java.net.ServerSocket with one thread per client.
//
// Usage: java EchoServer
//
// Listens on 127.0.0.1 (a free port, printed as "port=N"), greets each
// client with "hello" and echoes its lines until it leaves.

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

public class EchoServer {
    public static void main(String[] args) throws IOException {
        InetAddress lo = InetAddress.getByName("127.0.0.1");
        try (ServerSocket server = new ServerSocket(0, 50, lo)) {
            System.out.println("port=" + server.getLocalPort());
            System.out.flush();
            for (;;) {
                Socket client = server.accept();
                new Thread(() -> serve(client)).start();
            }
        }
    }

    private static void serve(Socket client) {
        try (Socket s = client;
             BufferedReader in = new BufferedReader(new InputStreamReader(
                 s.getInputStream(), StandardCharsets.UTF_8));
             PrintWriter out = new PrintWriter(s.getOutputStream(), true)) {
            out.println("hello");
            for (String line; (line = in.readLine()) != null;) {
                out.println(line);
            }
        } catch (IOException e) {
            System.err.println("client: " + e);
        }
    }
}
