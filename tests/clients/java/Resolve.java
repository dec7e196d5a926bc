// Resolves names through Java's JNDI DNS provider (com.sun.jndi.dns) against
// one server and prints what it got in a form tests/integration/clients.rs
// parses. JDK only.
//
//   usage: java Resolve.java HOST:PORT QUERY...
//   QUERY: TYPE:NAME, e.g. SRV:_grpc._tcp.sms.rpc.svc.local or A:sms.rpc.svc.local
//
// Output, one line each, QUERY and a value separated by a tab:
//   QUERY<TAB>0 10 8001 target.     an attribute value as JNDI gives it
//   QUERY<TAB>!ERROR Class: text    the lookup failed (NameNotFoundException, ...)
//   QUERY<TAB>#done                 the query is finished (no value before it:
//                                   the name has no attribute of that type)
import java.util.Hashtable;
import javax.naming.Context;
import javax.naming.NamingEnumeration;
import javax.naming.NamingException;
import javax.naming.directory.Attribute;
import javax.naming.directory.Attributes;
import javax.naming.directory.DirContext;
import javax.naming.directory.InitialDirContext;

public class Resolve {
    public static void main(String[] args) throws NamingException {
        if (args.length < 2) {
            System.err.println("usage: java Resolve.java HOST:PORT QUERY...");
            System.exit(2);
        }
        Hashtable<String, String> env = new Hashtable<>();
        env.put(Context.INITIAL_CONTEXT_FACTORY, "com.sun.jndi.dns.DnsContextFactory");
        // The provider URL names the server; names below are then absolute.
        env.put(Context.PROVIDER_URL, "dns://" + args[0] + "/.");
        // 2 s per try, 3 tries: a lost datagram does not fail the test.
        env.put("com.sun.jndi.dns.timeout.initial", "2000");
        env.put("com.sun.jndi.dns.timeout.retries", "3");
        DirContext ctx = new InitialDirContext(env);
        StringBuilder out = new StringBuilder();
        for (int i = 1; i < args.length; i++) {
            String query = args[i];
            int colon = query.indexOf(':');
            String type = query.substring(0, colon);
            String name = query.substring(colon + 1);
            try {
                Attributes attrs = ctx.getAttributes(name, new String[] {type});
                Attribute attr = attrs.get(type);
                if (attr != null) {
                    NamingEnumeration<?> values = attr.getAll();
                    while (values.hasMore()) {
                        out.append(query).append('\t').append(values.next()).append('\n');
                    }
                }
            } catch (NamingException e) {
                out.append(query).append("\t!ERROR ").append(e.getClass().getSimpleName())
                    .append(": ").append(String.valueOf(e.getMessage()).replace('\n', ' '))
                    .append('\n');
            }
            out.append(query).append("\t#done\n");
        }
        System.out.print(out);
        ctx.close();
    }
}
